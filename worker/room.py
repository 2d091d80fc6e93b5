"""Fan-out for the Yjs editors of one document, and their awareness.

Updates that arrive for a room within one event-loop turn are sent as one message at the end of
the turn (merged when there are several), encoded once and queued to every recipient without a
task per recipient. Awareness states are kept per client id so a newcomer sees who is there, and
a client that disconnects without saying goodbye is announced as gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pycrdt import merge_updates

from . import yjs_protocol as yjs
from .client import Client


class Room:
    __slots__ = ("_awareness", "_flush_scheduled", "_outbox", "clients", "name", "on_sent")

    def __init__(self, name: str, on_sent: Callable[[int], None]) -> None:
        self.name = name
        self.on_sent = on_sent
        # client → awareness client ids it announced
        self.clients: dict[Client, set[int]] = {}
        self._awareness: dict[int, yjs.AwarenessEntry] = {}
        self._outbox: list[tuple[bytes, bytes | None, Client | None]] = []
        self._flush_scheduled = False

    def join(self, client: Client) -> None:
        self.clients[client] = set()

    def leave(self, client: Client) -> None:
        ids = self.clients.pop(client, set())
        gone = []
        for client_id in ids:
            entry = self._awareness.pop(client_id, None)
            if entry is not None and not yjs.awareness_is_null(entry.state):
                gone.append(yjs.AwarenessEntry(client_id, entry.clock + 1, "null"))
        if gone and self.clients:
            self._send_all(yjs.awareness_message(yjs.encode_awareness(gone)), None)

    def publish(self, update: bytes, frame: bytes | None, origin: Client | None) -> None:
        """Queues an update for this turn's fan-out; ``frame`` is it already framed, if known."""
        if not self.clients or (len(self.clients) == 1 and origin in self.clients):
            return
        self._outbox.append((update, frame, origin))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        if len(outbox) == 1:
            update, frame, origin = outbox[0]
            self._send_all(frame or yjs.update_message(update), origin)
            return
        origins = {origin for _, _, origin in outbox}
        merged = merge_updates(*(update for update, _, _ in outbox))
        # Echoing a client's own update back is harmless (Yjs updates are idempotent) and
        # cheaper than one message per origin; skip the echo only when there is one origin.
        self._send_all(yjs.update_message(merged), origins.pop() if len(origins) == 1 else None)

    def _send_all(self, frame: bytes, exclude: Client | None) -> None:
        sent = 0
        for client in self.clients:
            if client is not exclude and client.send(frame):
                sent += 1
        self.on_sent(sent)

    def awareness(self, client: Client, payload: bytes, frame: bytes) -> None:
        """Records a client's awareness update and relays it to the others."""
        entries = yjs.parse_awareness(payload)
        announced = self.clients.get(client)
        for entry in entries:
            current = self._awareness.get(entry.client_id)
            if current is not None and current.clock > entry.clock:
                continue
            self._awareness[entry.client_id] = entry
            if announced is not None:
                if yjs.awareness_is_null(entry.state):
                    announced.discard(entry.client_id)
                else:
                    announced.add(entry.client_id)
        self._send_all(frame, client)

    def awareness_snapshot(self) -> bytes | None:
        live = [e for e in self._awareness.values() if not yjs.awareness_is_null(e.state)]
        if not live:
            return None
        return yjs.awareness_message(yjs.encode_awareness(live))

    def close_all(self, code: int, reason: str) -> None:
        for client in list(self.clients):
            client.close(code, reason)

    def describe(self) -> dict[str, object]:
        return {"doc": self.name, "clients": len(self.clients), "awareness": len(self._awareness)}
