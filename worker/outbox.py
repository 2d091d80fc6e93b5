"""What a session has accepted and storage does not hold yet, and who waits for it.

A session puts every committed update and every log entry into its ``Outbox``; the flusher
(``worker.flusher``), which creates and owns the outboxes, takes them out for one write at a
time and says how the write ended. Acknowledgements are sequence numbers: every update gets the
next number, and a write that reaches storage makes every number up to its last one durable, so
a client told "stored" (``when_durable``) is told only once its edit is in storage.

The no-loss rules kept here: a write takes what is buffered (``take_*``), and either ends in
storage (``*_written``) or puts its items back in front of anything buffered since
(``restore_*``), so a refused write is retried in order and nothing is dropped in between.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from contract.timefmt import iso_time

Durable = Callable[[str | None], None]
"""Called once a write is in storage (``None``), or with the reason it never will be here."""


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


class Outbox:
    """One session's updates and operations-log entries on their way to storage."""

    __slots__ = (
        "_buffered_bytes",
        "_bursts",
        "_inflight_bytes",
        "_log",
        "_on_pending",
        "_updates",
        "_waiters",
        "_written_upto",
        "applied_seq",
        "durable_seq",
    )

    def __init__(self, on_pending: Callable[[], None] | None = None) -> None:
        """``on_pending``: called whenever something is put in (the flusher's note that this
        outbox needs a look; it is then watched until nothing in it is unwritten)."""
        self._on_pending = on_pending
        self._updates: Unwritten[PendingUpdate] = Unwritten()
        self._buffered_bytes = 0  # of self._updates.buffered
        self._inflight_bytes = 0  # of self._updates.inflight
        # The operations log: file operations as they happen, and one open "edit burst" per
        # document being edited, closed into an entry when the log is written.
        self._log: Unwritten[dict[str, Any]] = Unwritten()
        self._bursts: dict[str, dict[str, Any]] = {}
        self.applied_seq = 0  # the number of the last update put in
        self.durable_seq = 0  # every update up to this number is in storage
        self._written_upto = 0  # the last number of the write in progress
        self._waiters: deque[tuple[int, Durable]] = deque()

    # --- what the session puts in --------------------------------------------------------------

    def add_update(self, doc: str, update: bytes, user: str, at: float) -> int:
        """Buffers one committed update; its sequence number."""
        self._updates.buffered.append(PendingUpdate(doc, update, user, at))
        self._buffered_bytes += len(update)
        self.applied_seq += 1
        if self._on_pending is not None:
            self._on_pending()
        return self.applied_seq

    def add_entry(self, entry: dict[str, Any]) -> None:
        """A file operation's log entry (it goes with the next group commit)."""
        self._log.buffered.append(entry)
        if self._on_pending is not None:
            self._on_pending()

    def note_edit(self, doc: str, user: str, nbytes: int, *, at: float, worker: str) -> None:
        """A client's edit of ``doc``: counted into the document's open edit burst."""
        burst = self._bursts.get(doc)
        if burst is None:
            if self._on_pending is not None:
                self._on_pending()
            burst = self._bursts[doc] = {
                "ts": iso_time(at),
                "userId": user,
                "worker": worker,
                "op": "edit",
                "path": doc,
                "bytes": 0,
                "updates": 0,
                "users": [],
            }
        burst["bytes"] += nbytes
        burst["updates"] += 1
        burst["userId"] = user
        if user not in burst["users"]:
            burst["users"].append(user)

    # --- acknowledgements ----------------------------------------------------------------------

    def when_durable(self, seq: int, callback: Durable) -> None:
        """Calls ``callback(None)`` once update ``seq`` is in storage (at once if it is)."""
        if seq <= self.durable_seq:
            callback(None)
        else:
            self._waiters.append((seq, callback))

    def fail_waiters(self, reason: str) -> None:
        """Nothing still waiting will be acknowledged by this worker: tell each why."""
        waiters, self._waiters = self._waiters, deque()
        for _, callback in waiters:
            callback(reason)

    # --- state ---------------------------------------------------------------------------------

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

    # --- what a write takes out ----------------------------------------------------------------

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
