"""Group commit: each session's pending updates go to storage as one segment per interval.

The flusher owns every live session's ``Outbox`` (``worker.outbox``: what is accepted and not
yet stored, and the acknowledgements waiting for it), keyed by session id: a session puts into
its outbox, the flusher takes out. Flushes are spread over the interval by age (a session is
written once its oldest pending update is ``FLUSH_INTERVAL_MS`` old), retried with exponential
backoff while storage refuses them (the session keeps serving and its updates stay in memory,
in order), and compaction follows once the segments written since the session's last snapshot
outweigh ``COMPACT_SEGMENT_RATIO`` times that snapshot (and ``COMPACT_MIN_SEGMENT_BYTES``), or
number ``compact_every_segments``. The flusher is also where the worker learns whether its
storage works (``StorageHealth``): every write reports to it.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import anyio
import structlog

from .metrics import WorkerMetrics
from .outbox import Outbox, PendingUpdate
from .settings import Settings
from .storage import SessionStore, StorageError
from .storage.session_store import merge_many
from .stored_bytes import StoredBytes

log = structlog.get_logger("worker.flusher")

Job = Callable[[], Coroutine[Any, Any, None]]

_MAX_BACKOFF_S = 30.0
# At most this many sessions are written at once (the periodic flush and the prompt ones for
# waiting acknowledgements together), so a burst of writes leaves storage connections free for
# loads and never queues up without bound.
_PARALLEL_FLUSHES = 16


class StorageHealth:
    """What the last storage request of this worker said: readiness and status report it."""

    __slots__ = ("error", "ok", "recovered_at")

    def __init__(self) -> None:
        self.ok = True
        self.error: str | None = None
        self.recovered_at = 0.0  # monotonic: the last time a request succeeded after a failure

    def failed(self, exc: Exception) -> None:
        self.ok = False
        self.error = str(exc)

    def recovered(self) -> None:
        if not self.ok:
            self.recovered_at = time.monotonic()
        self.ok = True
        self.error = None


class _Writes:
    """Per session: its outbox, one flush at a time, when the next may be tried after a
    failure, the segments written since the last compaction, and whether a compaction runs or
    failed (then only the segment count triggers the next: no full read of a session whose
    compaction cannot succeed on every flush)."""

    __slots__ = (
        "compact_failed",
        "compacting",
        "failed_at",
        "failures",
        "lock",
        "log_written",
        "outbox",
        "retry_at",
        "segments",
    )

    def __init__(self, on_pending: Callable[[], None]) -> None:
        self.outbox = Outbox(on_pending)
        self.segments = 0
        self.compacting = False
        self.compact_failed = False
        self.lock = asyncio.Lock()
        self.failures = 0
        self.retry_at = 0.0
        self.failed_at = 0.0
        self.log_written = time.monotonic()


def merged_by_doc(updates: list[PendingUpdate]) -> list[tuple[str, bytes]]:
    """One merged update per document, in order of first appearance.

    Every update here was applied to a live Doc already, so it is valid; merging per doc keeps
    segments small and loads fast.
    """
    by_doc: dict[str, list[bytes]] = defaultdict(list)
    for u in updates:
        by_doc[u.doc].append(u.update)
    return [(doc, merge_many(ups)) for doc, ups in by_doc.items()]


class Flusher:
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        metrics: WorkerMetrics,
        health: StorageHealth,
        lease_valid: Callable[[], bool] = lambda: True,
        stored: StoredBytes | None = None,
    ) -> None:
        """``stored``: the live sessions' stored bytes (compaction is decided from them)."""
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.health = health
        self.lease_valid = lease_valid
        self.stored = stored if stored is not None else StoredBytes(metrics)
        self._state: dict[str, _Writes] = {}
        # Sessions whose outbox may hold something unwritten (its ``on_pending`` adds them;
        # the periodic flush drops them once they hold nothing): the ticks look at these,
        # not at every live session (a scan of 1,000 idle sessions 8 times a second was 8 %
        # of the event loop's samples while they joined).
        self._pending: set[str] = set()
        self._soon: set[str] = set()  # sessions with a prompt flush scheduled
        self._limiter = anyio.CapacityLimiter(_PARALLEL_FLUSHES)

    def outbox(self, session_id: str) -> Outbox:
        """The outbox of a session that is being loaded or is live here (made on first use)."""
        state = self._state.get(session_id)
        if state is None:
            state = self._state[session_id] = _Writes(partial(self._pending.add, session_id))
        return state.outbox

    def loaded(self, session_id: str, stored: dict[str, int], objects: int) -> None:
        """A load read ``objects`` objects of ``stored`` bytes by kind: all but one count as
        segments still to compact (the 64-segment backstop, and a compaction on leaving)."""
        self.outbox(session_id)
        self._state[session_id].segments = max(0, objects - 1)
        self.stored.loaded(session_id, stored)

    def forget(self, session_id: str) -> None:
        """The session left: its outbox is dropped (a leaving session's is empty, or its
        contents were refused back to their clients)."""
        self._state.pop(session_id, None)
        self._pending.discard(session_id)
        self._soon.discard(session_id)
        self.stored.forget(session_id)

    async def flush(self, session_id: str, *, with_log: bool = False) -> bool:
        """Writes the session's pending updates as one segment; False if storage refused.

        The operations log goes along with it when there are file operations (so every group
        commit that carries one has its log segment), when ``with_log``, or when the edit
        bursts' interval (``LOG_INTERVAL_MS``) is due.
        """
        state = self._state.get(session_id)
        if state is None:
            return True  # not live here (any more): nothing of it is held
        outbox = state.outbox
        async with state.lock:
            now = time.monotonic()
            write_log = outbox.has_file_ops or (
                outbox.has_log
                and (with_log or now - state.log_written >= self.settings.log_interval_ms / 1000)
            )
            if not outbox.has_updates and not write_log:
                return True
            started = time.perf_counter()
            updates = outbox.take_updates() if outbox.has_updates else []
            entries = outbox.take_log() if write_log else []
            # The segment and the log segment are independent objects: both are written at
            # once, so a file operation waits for one storage round trip, not two.
            stored: bool | None = None  # the updates are in storage; acknowledge them?
            logged = False
            failure: StorageError | None = None

            async def put_updates() -> None:
                nonlocal stored, failure
                try:
                    await self.store.append_updates(session_id, merged_by_doc(updates), merged=True)
                except StorageError as exc:
                    failure = exc
                    return
                # Acknowledged only if it landed while this worker may own the session: a
                # takeover (which loads after it) comes later than that (worker.lease).
                stored = self.lease_valid()

            async def put_log() -> None:
                nonlocal logged, failure
                try:
                    await self.store.append_log(session_id, entries)
                except StorageError as exc:
                    failure = exc
                    return
                logged = True

            try:
                if updates and entries:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(put_updates)
                        tg.start_soon(put_log)
                elif updates:  # most flushes: no task of their own (they cost more than the put)
                    await put_updates()
                else:
                    await put_log()
            finally:
                # Whatever did not land goes back in front of what was buffered since (also
                # when cancelled mid-write: it is written again; merging twice is harmless).
                if updates:
                    if stored is None:
                        outbox.restore_updates()
                    else:
                        state.segments += 1
                        # Both writes have ended here, so a file operation is acknowledged
                        # with its log entry stored too (a log that failed is retried, the
                        # edit itself is stored).
                        outbox.updates_written(acknowledge=stored)
                if entries:
                    if logged:
                        outbox.log_written()
                        state.log_written = now
                    else:
                        outbox.restore_log()
            if failure is not None:
                self._failed(session_id, state, failure)
                return False
            self.metrics.flush_seconds.observe(time.perf_counter() - started)
            if state.failures:
                log.info("flush_recovered", session=session_id, after_attempts=state.failures)
            state.failures = 0
            state.retry_at = 0.0
            self.health.recovered()
        if not state.compacting and self.compaction_due(session_id, state):
            await self.compact(session_id)
        return True

    def has_segments(self, session_id: str) -> bool:
        """Segments of the session are in storage besides its snapshot, as far as we know."""
        state = self._state.get(session_id)
        return bool(state and state.segments) or self.stored.of(session_id)["updates"] > 0

    def compaction_due(self, session_id: str, state: _Writes) -> bool:
        """The segments since the last snapshot outweigh it (by the ratio, above the floor),
        or are too many: a cold load should read about one object, and stored bytes stay
        within a small multiple of the document."""
        if state.segments >= self.settings.compact_every_segments:
            return True
        if state.compact_failed:
            return False
        sizes = self.stored.of(session_id)
        floor = max(
            self.settings.compact_min_segment_bytes,
            self.settings.compact_segment_ratio * sizes["snapshots"],
        )
        return sizes["updates"] > floor

    def flush_soon(self, session_id: str, spawn: Callable[[Job], None]) -> None:
        """A client waits for an acknowledgement: write now instead of at the interval's end.

        Group commit still holds: every edit made while a write is in flight rides the next
        one, so one storage request acknowledges many writes under load. After a failure the
        backoff decides (the periodic flush retries), not the waiting client.
        """
        state = self._state.get(session_id)
        if state is None or session_id in self._soon or self._backing_off(state):
            return
        self._soon.add(session_id)

        async def write() -> None:
            async with self._limiter:
                self._soon.discard(session_id)
                await self.flush(session_id)

        spawn(write)

    def _backing_off(self, state: _Writes) -> bool:
        """Waiting out a failure, unless storage answered some other request since: then the
        outage is over and what is held (and the acknowledgements waiting on it) goes now."""
        return state.retry_at > time.monotonic() and state.failed_at >= self.health.recovered_at

    def _failed(self, session_id: str, state: _Writes, exc: StorageError) -> None:
        state.failures += 1
        delay = min(self.settings.flush_interval_ms / 1000 * 2**state.failures, _MAX_BACKOFF_S)
        state.failed_at = time.monotonic()
        state.retry_at = state.failed_at + delay
        self.metrics.flush_errors.inc()
        self.health.failed(exc)
        log.warning(
            "flush_failed",
            session=session_id,
            error=str(exc),
            attempt=state.failures,
            retry_in_s=round(delay, 2),
            unflushed_bytes=state.outbox.unflushed_bytes,
        )

    async def compact(self, session_id: str) -> None:
        """Folds the session into one snapshot; a failure only leaves more objects to read.

        It does not hold the session's flush lock: a flush may write a segment meanwhile, which
        this compaction does not list, so does not delete (``SessionStore.compact``).
        """
        state = self._state.get(session_id)
        if state is not None:
            if state.compacting:
                return  # one at a time: the running one folds what this one would
            state.segments = 0
            state.compacting = True
        try:
            result = await self.store.compact(session_id)
        except StorageError as exc:
            log.warning("compact_failed", session=session_id, error=str(exc))
            if state is not None:
                state.compact_failed = True
            return
        finally:
            if state is not None:
                state.compacting = False
        if state is not None:
            state.compact_failed = False
        self.stored.compacted(session_id, result)
        if result.snapshot_key is not None:
            log.info(
                "session_compacted",
                session=session_id,
                objects=len(result.merged_keys),
                read_bytes=sum(result.merged_bytes.values()),
                snapshot_bytes=result.snapshot_bytes,
            )

    async def flush_due(self, tick: float = 0.0) -> None:
        """Flushes every session whose oldest update is about ``FLUSH_INTERVAL_MS`` old.

        Ticking a few times per interval and flushing by age spreads the writes of many
        sessions over the interval instead of one burst per interval (the burst showed as p99
        fan-out latency), and still writes each update within one interval.
        """
        now, wall = time.monotonic(), time.time()
        threshold = self.settings.flush_interval_ms / 1000 - tick
        log_every = self.settings.log_interval_ms / 1000
        due = []
        for session_id, state in self._watched():
            if self._backing_off(state):
                continue
            outbox = state.outbox
            oldest = outbox.oldest_pending
            if (outbox.has_updates and oldest is not None and wall - oldest >= threshold) or (
                outbox.has_log and now - state.log_written >= log_every
            ):
                due.append(session_id)
        if due:

            async def flush_some() -> None:
                # One task per slot of the limiter, not one per session: a task (and a limiter
                # round) per flush cost more CPU than many of the flushes (docs/benchmarks.md).
                async with self._limiter:
                    while due:
                        await self.flush(due.pop())

            async with anyio.create_task_group() as tg:
                for _ in range(min(len(due), _PARALLEL_FLUSHES)):
                    tg.start_soon(flush_some)
        self.update_lag_metrics()

    def _watched(self) -> list[tuple[str, _Writes]]:
        """The sessions with something not yet in storage; those found clean are dropped
        from the watch (their outbox adds them again when something is put in)."""
        watched = []
        for session_id in list(self._pending):
            state = self._state.get(session_id)
            if state is None or not state.outbox.dirty:
                self._pending.discard(session_id)
            else:
                watched.append((session_id, state))
        return watched

    def update_lag_metrics(self) -> tuple[int, float]:
        """(bytes held only in memory, age in seconds of the oldest of them)."""
        outboxes = [state.outbox for _, state in self._watched()]
        oldest = [t for o in outboxes if (t := o.oldest_pending) is not None]
        unflushed = sum(o.unflushed_bytes for o in outboxes)
        age = max(0.0, time.time() - min(oldest)) if oldest else 0.0
        self.metrics.unflushed_bytes.set(unflushed)
        self.metrics.unflushed_age.set(age)
        return unflushed, age
