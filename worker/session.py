"""One live session: its documents, their rooms and its JSON clients.

A file is its Yjs document (text in the ``Y.Text`` named ``content``); the session's index is the
document named ``""`` (``Y.Map`` named ``files``: path → metadata). Every change, from either
protocol, goes through ``_commit_update``: applied once, fanned out once, and put into the
session's ``Outbox`` (``worker.outbox``) for the next group commit to storage. What clients
write passes ``admit`` first (``worker.limits``): an update over a limit is refused whole.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from pycrdt import Doc, Map, Text, get_update

from contract import json_protocol as jmsg
from contract.timefmt import iso_time

from . import yjs_protocol as yjs
from .authors import Authors
from .client import Client
from .doc_schema import CONTENT, EMPTY_UPDATE, FILES, INDEX_DOC, is_binary, text_entry
from .limits import DocSize, LimitExceeded, Limits, decide
from .metrics import WorkerMetrics
from .outbox import Outbox
from .room import Room

log = structlog.get_logger("worker.session")

_VERSIONS_KEPT = 256


class UpdateRejected(ValueError):
    """A client's Yjs update could not be decoded; the document is unchanged."""


class SessionMoving(RuntimeError):
    """The session is leaving this worker (drain, hand-off, lost lease): no edit is accepted."""


def _always() -> bool:
    return True


class Session:
    def __init__(
        self,
        session_id: str,
        stored_docs: dict[str, bytes],
        worker_id: str,
        metrics: WorkerMetrics,
        outbox: Outbox | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``outbox``: where its edits wait for storage (the flusher's; a new one if none)."""
        self.id = session_id
        self.worker_id = worker_id
        self.metrics = metrics
        self._stored = dict(stored_docs)  # merged updates not yet turned into Docs
        self.limits = limits if limits is not None else Limits()
        # The documents' size as loaded is exact enough: the merged updates are in hand.
        self.size = DocSize(sum(len(update) for update in stored_docs.values()))
        self._docs: dict[str, Doc[Any]] = {}
        self.rooms: dict[str, Room] = {}
        self.json_clients: set[Client] = set()
        self.authors = Authors()  # which connection writes as which Yjs client ID
        self.outbox = outbox if outbox is not None else Outbox()
        self.moving = False
        # This worker's right to accept edits (its lease, checked per edit: a worker that was
        # frozen and wakes up after others took over refuses before it handles anything).
        self.lease_valid: Callable[[], bool] = _always
        self.fenced = False  # the lease lapsed: only what it holds is written, then forgotten
        self.claim: Any = None  # worker.ownership.Claim, set by the manager that claimed it
        self.last_activity = time.time()
        self.idle_since: float | None = time.monotonic()
        self.reserved = 0  # acquired for a client that is not attached yet
        # HTTP readers' replicas, by version token (the HTTP API's stateless shadows): a write
        # that names the version it was based on is merged like a JSON client's update.
        self._versions: OrderedDict[str, tuple[str, Doc[Any]]] = OrderedDict()
        self.users: set[str] = set()
        # Auto-commit (git sessions only): who edited since the last commit, in order of their
        # last edit, and when the last edit came (the cooldown runs from there).
        self.is_git = False
        self.editors: dict[str, float] = {}
        self.last_edit: float | None = None
        self.index = self.doc(INDEX_DOC).get(FILES, type=Map)
        # A plain-set mirror of the index's keys: checked on every update, changed only here.
        self._listed: set[str] = set(self.index.keys())

    # --- documents -------------------------------------------------------------------------

    def doc(self, name: str) -> Doc[Any]:
        doc = self._docs.get(name)
        if doc is None:
            doc = Doc()
            stored = self._stored.pop(name, None)
            if stored is not None:
                doc.apply_update(stored)
            self._docs[name] = doc
            self.metrics.documents_loaded.inc()
        return doc

    def text(self, path: str) -> Text:
        text: Text = self.doc(path).get(CONTENT, type=Text)
        return text

    def has_file(self, path: str) -> bool:
        return path in self._listed

    def binary_entry(self, path: str) -> dict[str, Any] | None:
        """The index entry of a binary file (kept byte-exact as a blob in storage), else None."""
        if path not in self._listed:
            return None
        entry = self.index.get(path)
        return entry if is_binary(entry) else None

    def snapshot_files(self) -> tuple[dict[str, bytes], dict[str, str]]:
        """(every text file's current bytes, every binary file's blob sha256) for a commit."""
        texts: dict[str, bytes] = {}
        blobs: dict[str, str] = {}
        for path in self.file_paths():
            entry = self.binary_entry(path)
            if entry is not None:
                blobs[path] = str(entry.get("sha256"))
            else:
                texts[path] = str(self.text(path)).encode()
        return texts, blobs

    def file_paths(self) -> list[str]:
        return sorted(self._listed)

    @property
    def documents(self) -> int:
        return len(self._docs)

    def measure(self) -> int:
        """The exact size of the documents' state (encodes every loaded document: costly)."""
        loaded = sum(len(doc.get_update()) for doc in self._docs.values())
        return loaded + sum(len(update) for update in self._stored.values())

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.metrics.messages_sent.inc)
        return room

    # --- clients ---------------------------------------------------------------------------

    @property
    def client_count(self) -> int:
        return len(self.json_clients) + sum(len(r.clients) for r in self.rooms.values())

    def reserve(self) -> None:
        """Someone is about to attach a client (the manager's ``acquire``): stay loaded."""
        self.reserved += 1
        self.idle_since = None

    def unreserve(self) -> None:
        """A reservation ends (its client attached, or never came)."""
        self.reserved = max(0, self.reserved - 1)
        if self.client_count == 0 and self.reserved == 0 and self.idle_since is None:
            self.idle_since = time.monotonic()

    def attach(self, client: Client, room: str | None) -> None:
        if room is None:
            self.json_clients.add(client)
        else:
            self.room(room).join(client)
        self.idle_since = None

    def detach(self, client: Client, room: str | None) -> None:
        if room is None:
            self.json_clients.discard(client)
        else:
            r = self.rooms.get(room)
            if r is not None:
                r.leave(client)
                if not r.clients:
                    del self.rooms[room]
        self.authors.release(client)
        if self.client_count == 0 and self.reserved == 0:
            self.idle_since = time.monotonic()

    def broadcast_json(self, message: str, exclude: Client | None = None) -> None:
        for client in self.json_clients:
            if client is not exclude and client.send(message):
                self.metrics.messages_sent.inc()

    def close_clients(self, code: int, reason: str) -> None:
        for client in list(self.json_clients):
            client.close(code, reason)
        for room in self.rooms.values():
            room.close_all(code, reason)

    # --- edits -----------------------------------------------------------------------------

    def apply_client_update(
        self,
        name: str,
        update: bytes,
        origin: Client,
        frame: bytes | None = None,
        *,
        lists: bool = True,
    ) -> None:
        """Applies a Yjs update from a client of either protocol, or raises UpdateRejected.

        ``lists``: an edit of a document that is not a file yet makes it one (a Yjs editor
        that opens a new path). A JSON ``yjsUpdate`` passes False: its ``docId`` is any
        shared document (the original's example calls one ``'document-id'``), a file only if
        it names one; otherwise it is kept and relayed but never listed or committed.
        """
        self._check_writable()
        if update == EMPTY_UPDATE:
            return  # e.g. a fresh editor's sync step 2: nothing to apply, store or relay
        if name == INDEX_DOC:
            # The index is server-owned: files appear and vanish through file operations and
            # edits, never through a client rewriting the map.
            return
        self.admit(name, len(update), origin.user_id, lambda: self.brings_news(name, update))
        doc = self.doc(name)
        try:
            doc.apply_update(update)
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from None
        self.metrics.updates_received.inc()
        self.metrics.update_bytes.inc(len(update))
        self._commit_update(name, update, origin.user_id, origin, frame)
        if lists and name not in self._listed:
            self.ensure_listed(name, origin.user_id)

    def admit(
        self,
        name: str,
        nbytes: int,
        user: str,
        adds: Callable[[], bool],
        *,
        growth: int | None = None,
    ) -> None:
        """Raises LimitExceeded (counted and logged) when a write of ``nbytes`` to document
        ``name`` would pass a limit; ``adds``/``growth`` as ``worker.limits.decide``'s."""
        refusal = decide(
            self.limits, self.size, nbytes, measure=self.measure, adds=adds, growth=growth
        )
        if refusal is None:
            return
        self.metrics.limit_refusals.labels(refusal.limit).inc()
        log.warning(
            "update_refused",
            session=self.id,
            doc=name,
            user=user,
            limit=refusal.limit,
            value=refusal.value,
            maximum=refusal.maximum,
            size=self.size.estimate,
        )
        raise LimitExceeded(refusal)

    def brings_news(self, name: str, update: bytes) -> bool:
        """Whether ``update`` carries items document ``name`` does not have yet."""
        try:
            return yjs.has_items(get_update(update, self.doc(name).get_state()))
        except ValueError:
            return False  # not an update: applying it is refused next

    @contextmanager
    def local_edit(self, name: str, user: str, doc: Doc[Any] | None = None) -> Iterator[Doc[Any]]:
        """A server-side edit (a JSON file operation); its update goes the usual way.

        With ``doc`` given (a JSON client's shadow copy, see ``files``), the edit is made there
        and its update merged into the live document, so it only touches what that client saw.
        """
        self._check_writable()
        live = self.doc(name)
        target = live if doc is None else doc
        captured: list[bytes] = []
        sub = target.observe(lambda event: captured.append(event.update))
        try:
            with target.transaction():
                yield target
        finally:
            target.unobserve(sub)
        for update in captured:
            if target is not live:
                live.apply_update(update)
            self._commit_update(name, update, user, None, None)

    def remember_version(self, path: str, replica: Doc[Any]) -> str:
        """A token for ``replica`` (a copy of ``path`` as someone read it); bounded, LRU."""
        token = secrets.token_hex(8)
        self._versions[token] = (path, replica)
        while len(self._versions) > _VERSIONS_KEPT:
            self._versions.popitem(last=False)
        return token

    def version(self, token: str) -> tuple[str, Doc[Any]] | None:
        """(path, replica) of a remembered version, or None when unknown or forgotten."""
        found = self._versions.pop(token, None)  # one write per version: it moves on
        return found

    def copy_doc(self, name: str) -> Doc[Any]:
        """An independent replica of a document as it is now (a JSON client's shadow)."""
        replica: Doc[Any] = Doc()
        replica.apply_update(self.doc(name).get_update())
        return replica

    def ensure_listed(self, path: str, user: str) -> None:
        if path not in self._listed:
            with self.local_edit(INDEX_DOC, user):
                self.index[path] = text_entry(user, int(time.time() * 1000))
            self._listed.add(path)

    def list_entry(self, path: str, entry: dict[str, Any], user: str) -> None:
        """Lists ``path`` with ``entry`` as it is (a binary file's entry moving on rename)."""
        with self.local_edit(INDEX_DOC, user):
            self.index[path] = entry
        self._listed.add(path)

    def unlist(self, path: str, user: str) -> None:
        if path in self._listed:
            with self.local_edit(INDEX_DOC, user):
                del self.index[path]
            self._listed.discard(path)

    def _check_writable(self) -> None:
        if self.fenced or not self.lease_valid():
            raise SessionMoving("this worker lost its storage lease; reconnect")
        if self.moving:
            raise SessionMoving("session is moving to another worker; reconnect")

    def _commit_update(
        self, name: str, update: bytes, user: str, origin: Client | None, frame: bytes | None
    ) -> None:
        now = time.time()
        self.size.grew(len(update))
        self.outbox.add_update(name, update, user, now)
        self.last_activity = now
        self.users.add(user)
        self.editors.pop(user, None)
        self.editors[user] = self.last_edit = time.monotonic()
        if origin is not None and name != INDEX_DOC:  # file operations log themselves
            self.outbox.note_edit(name, user, len(update), at=now, worker=self.worker_id)
        room = self.rooms.get(name)
        if room is not None:
            room.publish(update, frame, origin)
        if origin is not None and self.json_clients and name != INDEX_DOC:
            message = jmsg.yjs_update(user, name, update)
            self.broadcast_json(message, exclude=origin)

    def log(self, op: str, user: str, path: str, nbytes: int, **extra: Any) -> None:
        entry = {
            "ts": iso_time(time.time()),
            "userId": user,
            "worker": self.worker_id,
            "op": op,
            "path": path,
            "bytes": nbytes,
        }
        entry.update(extra)
        self.outbox.add_entry(entry)

    # --- sync helpers for the Yjs endpoint -------------------------------------------------

    def sync_start(self, name: str) -> bytes:
        return yjs.sync_step1(self.doc(name).get_state())

    def sync_reply(self, name: str, state_vector: bytes) -> bytes:
        try:
            return yjs.sync_step2(self.doc(name).get_update(state_vector))
        except ValueError as exc:
            raise UpdateRejected(f"bad state vector: {exc}") from None

    def describe(self) -> dict[str, Any]:
        return {
            "sessionId": self.id,
            "clients": self.client_count,
            "docs": len(self.index),
            "lastActivity": self.last_activity,
            "unflushedBytes": self.outbox.unflushed_bytes,
            "users": sorted(self.users),
            "epoch": self.claim.epoch if self.claim is not None else None,
            "ownedSince": self.claim.record.since if self.claim is not None else None,
            # Serving (edits accepted), or only finishing its writes before it leaves.
            "state": "fenced" if self.fenced else "leaving" if self.moving else "live",
        }
