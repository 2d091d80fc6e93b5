"""One live session: its documents, their rooms, its JSON clients, and what is not yet durable.

A file is its Yjs document (text in the ``Y.Text`` named ``content``); the session's index is the
document named ``""`` (``Y.Map`` named ``files``: path → metadata). Every change, from either
protocol, goes through ``_commit_update``: applied once, fanned out once, and buffered for the
next group-commit to storage.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pycrdt import Doc, Map, Text

from contract import json_protocol as jmsg
from contract.timefmt import iso_time

from . import yjs_protocol as yjs
from .client import Client
from .metrics import WorkerMetrics
from .room import Room

INDEX_DOC = ""
_VERSIONS_KEPT = 256
EMPTY_UPDATE = b"\x00\x00"  # no structs, no deletions
CONTENT = "content"
FILES = "files"


class UpdateRejected(ValueError):
    """A client's Yjs update could not be decoded; the document is unchanged."""


class SessionMoving(RuntimeError):
    """The session is leaving this worker (drain, hand-off, lost lease): no edit is accepted."""


Durable = Callable[[str | None], None]
"""Called once a write is in storage (``None``), or with the reason it never will be here."""


def _always() -> bool:
    return True


@dataclass(slots=True)
class PendingUpdate:
    doc: str
    update: bytes
    user: str
    at: float


T = TypeVar("T")


class Unwritten(Generic[T]):
    """Items not yet in storage: those buffered for the next write, and those of the write in
    progress. A write ``take``s the buffer and ends with ``written``, or, when storage refused
    it, ``restore`` puts its items back in front of anything buffered since."""

    __slots__ = ("buffered", "inflight")

    def __init__(self) -> None:
        self.buffered: list[T] = []
        self.inflight: list[T] = []

    def __bool__(self) -> bool:
        return bool(self.buffered or self.inflight)

    def oldest(self) -> T | None:
        """The item waiting longest (the in-progress write's first, else the buffer's)."""
        if self.inflight:
            return self.inflight[0]
        return self.buffered[0] if self.buffered else None

    def take(self) -> list[T]:
        if self.inflight:
            raise RuntimeError("one write at a time: the previous one has not ended")
        self.inflight, self.buffered = self.buffered, []
        return self.inflight

    def written(self) -> None:
        self.inflight = []

    def restore(self) -> None:
        self.buffered[:0] = self.inflight
        self.inflight = []


class Session:
    def __init__(
        self,
        session_id: str,
        stored_docs: dict[str, bytes],
        worker_id: str,
        metrics: WorkerMetrics,
    ) -> None:
        self.id = session_id
        self.worker_id = worker_id
        self.metrics = metrics
        self._stored = dict(stored_docs)  # merged updates not yet turned into Docs
        self._docs: dict[str, Doc[Any]] = {}
        self.rooms: dict[str, Room] = {}
        self.json_clients: set[Client] = set()
        self._updates: Unwritten[PendingUpdate] = Unwritten()
        self._buffered_bytes = 0  # of self._updates.buffered
        self._inflight_bytes = 0  # of self._updates.inflight
        # The operations log: file operations as they happen, and one open "edit burst" per
        # document being edited, closed into an entry when the log is written.
        self._log: Unwritten[dict[str, Any]] = Unwritten()
        self._bursts: dict[str, dict[str, Any]] = {}
        self.moving = False
        # This worker's right to accept edits (its lease, checked per edit: a worker that was
        # frozen and wakes up after others took over refuses before it handles anything).
        self.lease_valid: Callable[[], bool] = _always
        self.fenced = False  # the lease lapsed: only what it holds is written, then forgotten
        self.claim: Any = None  # worker.ownership.Claim, set by the manager that claimed it
        # Durable acknowledgements: every committed update gets the next sequence number; a
        # write that reaches storage makes every number up to its last one durable.
        self.applied_seq = 0
        self.durable_seq = 0
        self._written_upto = 0  # the last number of the write in progress
        self._waiters: deque[tuple[int, Durable]] = deque()
        self.last_activity = time.time()
        self.idle_since: float | None = time.monotonic()
        self.reserved = 0  # acquired for a client that is not attached yet
        # HTTP readers' replicas, by version token (the HTTP API's stateless shadows): a write
        # that names the version it was based on is merged like a JSON client's update.
        self._versions: OrderedDict[str, tuple[str, Doc[Any]]] = OrderedDict()
        self.segments_since_compact = 0
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
        return entry if isinstance(entry, dict) and entry.get("type") == "binary" else None

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
        self, name: str, update: bytes, origin: Client, frame: bytes | None = None
    ) -> None:
        """Applies a Yjs update from a client of either protocol, or raises UpdateRejected."""
        self._check_writable()
        if update == EMPTY_UPDATE:
            return  # e.g. a fresh editor's sync step 2: nothing to apply, store or relay
        if name == INDEX_DOC:
            # The index is server-owned: files appear and vanish through file operations and
            # edits, never through a client rewriting the map.
            return
        doc = self.doc(name)
        try:
            doc.apply_update(update)
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from None
        self.metrics.updates_received.inc()
        self.metrics.update_bytes.inc(len(update))
        self._commit_update(name, update, origin.user_id, origin, frame)
        if name not in self._listed:
            self.ensure_listed(name, origin.user_id)

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
                self.index[path] = {"type": "text", "created": int(time.time() * 1000), "by": user}
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
        self._updates.buffered.append(PendingUpdate(name, update, user, now))
        self._buffered_bytes += len(update)
        self.applied_seq += 1
        self.last_activity = now
        self.users.add(user)
        self.editors.pop(user, None)
        self.editors[user] = self.last_edit = time.monotonic()
        if origin is not None and name != INDEX_DOC:  # file operations log themselves
            burst = self._bursts.get(name)
            if burst is None:
                burst = self._bursts[name] = {
                    "ts": iso_time(now),
                    "userId": user,
                    "worker": self.worker_id,
                    "op": "edit",
                    "path": name,
                    "bytes": 0,
                    "updates": 0,
                    "users": [],
                }
            burst["bytes"] += len(update)
            burst["updates"] += 1
            burst["userId"] = user
            if user not in burst["users"]:
                burst["users"].append(user)
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
        self._log.buffered.append(entry)

    # --- durability ------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True while any update (buffered or being written) or log entry is not yet durable."""
        return bool(self._updates or self._log or self._bursts)

    @property
    def has_updates(self) -> bool:
        return bool(self._updates.buffered)

    @property
    def has_log(self) -> bool:
        return bool(self._log.buffered or self._bursts)

    @property
    def has_file_ops(self) -> bool:
        """File operations wait for no interval: they go with the next group commit."""
        return bool(self._log.buffered)

    @property
    def unflushed_bytes(self) -> int:
        return self._buffered_bytes + self._inflight_bytes

    @property
    def oldest_pending(self) -> float | None:
        """When the oldest update not yet in storage was made (the durability lag)."""
        oldest = self._updates.oldest()
        return None if oldest is None else oldest.at

    def take_updates(self) -> list[PendingUpdate]:
        """The buffered updates, for one write; it ends with ``updates_written`` or
        ``restore_updates``."""
        taken = self._updates.take()  # refuses first if a write is still in progress
        self._inflight_bytes, self._buffered_bytes = self._buffered_bytes, 0
        self._written_upto = self.applied_seq
        return taken

    def updates_written(self, *, acknowledge: bool = True) -> None:
        """The write is in storage. ``acknowledge=False``: it landed after this worker's lease
        ran out, so another worker may have loaded the session without it; nobody is told it
        is stored here (``fail_waiters`` follows, from the fence)."""
        self._updates.written()
        self._inflight_bytes = 0
        if acknowledge:
            self.durable_seq = self._written_upto
            while self._waiters and self._waiters[0][0] <= self.durable_seq:
                self._waiters.popleft()[1](None)

    def when_durable(self, seq: int, callback: Durable) -> None:
        """Calls ``callback(None)`` once update ``seq`` is in storage (at once if it is)."""
        if seq <= self.durable_seq:
            callback(None)
        else:
            self._waiters.append((seq, callback))

    @property
    def awaiting_durability(self) -> bool:
        return bool(self._waiters)

    def fail_waiters(self, reason: str) -> None:
        """Nothing still waiting will be acknowledged by this worker: tell each why."""
        waiters, self._waiters = self._waiters, deque()
        for _, callback in waiters:
            callback(reason)

    def restore_updates(self) -> None:
        """A failed write: its updates go back in front of anything buffered since."""
        self._updates.restore()
        self._buffered_bytes += self._inflight_bytes
        self._inflight_bytes = 0

    def take_log(self) -> list[dict[str, Any]]:
        """Buffered file operations and the open edit bursts (closed now), for one write."""
        self._log.buffered.extend(self._bursts.values())
        self._bursts = {}
        return self._log.take()

    def log_written(self) -> None:
        self._log.written()

    def restore_log(self) -> None:
        self._log.restore()

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
            "unflushedBytes": self.unflushed_bytes,
            "users": sorted(self.users),
            "epoch": self.claim.epoch if self.claim is not None else None,
            "ownedSince": self.claim.record.since if self.claim is not None else None,
            # Serving (edits accepted), or only finishing its writes before it leaves.
            "state": "fenced" if self.fenced else "leaving" if self.moving else "live",
        }
