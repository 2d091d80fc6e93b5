"""Live sessions on this worker: load once, group-commit, unload when idle, hand off on drain.

Loads are single-flight: however many clients join a fresh session at the same moment, one load
runs and every joiner gets the same session (no room-start lock held for a room's lifetime, no
unguarded "already started" check). A load that fails refuses the session; it never serves an
empty one. Flushes retry with backoff while storage is down and the session keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import merge_updates

from .autocommit import AutoCommitter
from .client import CLOSE_RESTART
from .metrics import WorkerMetrics
from .session import Session, iso_time
from .settings import Settings
from .storage import CorruptObject, SessionMeta, SessionStore, StorageError

log = structlog.get_logger("worker.sessions")

_MAX_BACKOFF_S = 30.0


class SessionUnavailable(RuntimeError):
    """The session cannot be served here now (storage down, corrupt state, draining)."""

    def __init__(self, reason: str, *, draining: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.draining = draining


class _FlushState:
    __slots__ = ("failures", "lock", "log_written", "retry_at")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.failures = 0
        self.retry_at = 0.0
        self.log_written = time.monotonic()


class SessionManager:
    def __init__(self, settings: Settings, store: SessionStore, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self._loading: dict[str, asyncio.Task[Session]] = {}
        self._flush: defaultdict[str, _FlushState] = defaultdict(_FlushState)
        self.autocommit = AutoCommitter(settings, store, metrics)
        self.draining = False
        self._drain_lock = asyncio.Lock()
        self._background: TaskGroup | None = None  # run()'s task group
        self._drain_running = False
        self.last_drain: dict[str, Any] | None = None
        self.storage_ok = True
        self.storage_error: str | None = None

    # --- joining ---------------------------------------------------------------------------

    async def acquire(self, session_id: str) -> Session:
        """The live session, loading it first if needed; raises SessionUnavailable."""
        if self.draining:
            raise SessionUnavailable(
                "worker is draining; reconnect to reach the new owner", draining=True
            )
        session = self.sessions.get(session_id)
        if session is not None and not session.moving:
            return session
        task = self._loading.get(session_id)
        if task is None:
            task = asyncio.create_task(self._load(session_id), name=f"load:{session_id}")
            task.add_done_callback(self._loaded)
            self._loading[session_id] = task
        return await asyncio.shield(task)

    def _loaded(self, task: asyncio.Task[Session]) -> None:
        for sid, t in list(self._loading.items()):
            if t is task:
                del self._loading[sid]
        if not task.cancelled():
            task.exception()  # retrieved here so a load nobody awaits any more is not "lost"

    async def _load(self, session_id: str) -> Session:
        started = time.perf_counter()
        try:
            loaded = await self.store.load(session_id)
        except CorruptObject as exc:
            log.error("session_load_failed", session=session_id, error=str(exc))
            raise SessionUnavailable(
                f"stored state is corrupt ({exc}); an operator must repair it"
            ) from None
        except StorageError as exc:
            self._storage_failed(exc)
            log.warning("session_load_failed", session=session_id, error=str(exc))
            raise SessionUnavailable(f"storage unavailable ({exc}); retry shortly") from None
        session = Session(session_id, loaded.docs, self.settings.worker_id, self.metrics)
        session.is_git = loaded.meta is not None and loaded.meta.is_git_repo
        if self.draining:
            raise SessionUnavailable(
                "worker is draining; reconnect to reach the new owner", draining=True
            )
        self.sessions[session_id] = session
        self.metrics.sessions_active.set(len(self.sessions))
        self.metrics.session_load_seconds.observe(time.perf_counter() - started)
        log.info(
            "session_loaded",
            session=session_id,
            docs=len(loaded.docs),
            objects=len(loaded.keys),
            seconds=round(time.perf_counter() - started, 4),
        )
        return session

    # --- durability ------------------------------------------------------------------------

    async def flush(self, session: Session, *, with_log: bool = False) -> bool:
        """Writes the session's pending updates as one segment; False if storage refused.

        The operations log goes along with it when there are file operations (so every group
        commit that carries one has its log segment), when ``with_log``, or when the edit
        bursts' interval (``LOG_INTERVAL_MS``) is due.
        """
        state = self._flush[session.id]
        async with state.lock:
            now = time.monotonic()
            write_log = session.has_file_ops or (
                session.has_log
                and (with_log or now - state.log_written >= self.settings.log_interval_ms / 1000)
            )
            if not session.has_updates and not write_log:
                return True
            started = time.perf_counter()
            batch = session.take_updates() if session.has_updates else None
            entries = session.take_log() if write_log else []
            try:
                if batch is not None:
                    by_doc: dict[str, list[bytes]] = defaultdict(list)
                    for u in batch.updates:
                        by_doc[u.doc].append(u.update)
                    # Every update here was applied to a live Doc already, so it is valid;
                    # merging per doc keeps segments small and loads fast.
                    merged = [
                        (doc, ups[0] if len(ups) == 1 else merge_updates(*ups))
                        for doc, ups in by_doc.items()
                    ]
                    await self.store.append_updates(session.id, merged, merged=True)
                    session.updates_flushed()
                    batch = None
                    self._storage_recovered()
                    session.segments_since_compact += 1
                if entries:
                    await self.store.append_log(session.id, entries)
                    session.log_flushed()
                    entries = []
                    state.log_written = now
            except StorageError as exc:
                if batch is not None:
                    session.restore_updates(batch)
                if entries:
                    session.restore_log(entries)
                state.failures += 1
                delay = min(
                    self.settings.flush_interval_ms / 1000 * 2**state.failures, _MAX_BACKOFF_S
                )
                state.retry_at = time.monotonic() + delay
                self.metrics.flush_errors.inc()
                self._storage_failed(exc)
                log.warning(
                    "flush_failed",
                    session=session.id,
                    error=str(exc),
                    attempt=state.failures,
                    retry_in_s=round(delay, 2),
                    unflushed_bytes=session.unflushed_bytes,
                )
                return False
            self.metrics.flush_seconds.observe(time.perf_counter() - started)
            if state.failures:
                log.info("flush_recovered", session=session.id, after_attempts=state.failures)
            state.failures = 0
            state.retry_at = 0.0
            self._storage_recovered()
        if session.segments_since_compact >= self.settings.compact_every_segments:
            await self.compact(session)
        return True

    async def compact(self, session: Session) -> None:
        try:
            await self.store.compact(session.id)
            session.segments_since_compact = 0
        except StorageError as exc:
            log.warning("compact_failed", session=session.id, error=str(exc))

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
        for s in self.sessions.values():
            state = self._flush[s.id]
            if state.retry_at > now:
                continue
            oldest = s.oldest_pending
            if (s.has_updates and oldest is not None and wall - oldest >= threshold) or (
                s.has_log and now - state.log_written >= log_every
            ):
                due.append(s)
        if due:
            limiter = anyio.CapacityLimiter(32)

            async def one(s: Session) -> None:
                async with limiter:
                    await self.flush(s)

            async with anyio.create_task_group() as tg:
                for s in due:
                    tg.start_soon(one, s)
        self.update_lag_metrics()

    def update_lag_metrics(self) -> tuple[int, float]:
        """(bytes held only in memory, age in seconds of the oldest of them)."""
        oldest = [t for s in self.sessions.values() if (t := s.oldest_pending) is not None]
        unflushed = sum(s.unflushed_bytes for s in self.sessions.values())
        age = max(0.0, time.time() - min(oldest)) if oldest else 0.0
        self.metrics.unflushed_bytes.set(unflushed)
        self.metrics.unflushed_age.set(age)
        return unflushed, age

    def _storage_failed(self, exc: Exception) -> None:
        self.storage_ok = False
        self.storage_error = str(exc)

    def _storage_recovered(self) -> None:
        self.storage_ok = True
        self.storage_error = None

    # --- unloading -------------------------------------------------------------------------

    async def reap_idle(self) -> None:
        idle_s = self.settings.session_idle_ms / 1000
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if session.idle_since is not None and now - session.idle_since >= idle_s:
                await self.unload(session)

    async def unload(self, session: Session) -> bool:
        """Flush, compact, forget; a session that gained a client or cannot flush stays.

        A git session's uncommitted edits are committed first: nobody is editing any more, so
        its cooldown would only run out after the session is gone.
        """
        if session.is_git and session.editors:
            try:
                await self.autocommit.commit(session)
            except StorageError:
                return False  # storage is down: keep the session, try again later
            except Exception:  # logged in commit(); the edits are durable in storage anyway
                pass
        if not await self.flush(session, with_log=True):
            return False
        if session.client_count or session.dirty:
            return False
        await self.compact(session)
        if session.client_count or session.dirty or self.sessions.get(session.id) is not session:
            return False
        await self._save_meta(session)
        self._forget(session)
        log.info("session_unloaded", session=session.id)
        return True

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self._flush.pop(session.id, None)
            self.autocommit.forget(session.id)
            self.metrics.documents_loaded.dec(session.documents)
            self.metrics.sessions_active.set(len(self.sessions))

    async def _save_meta(self, session: Session) -> None:
        try:
            meta = await self.store.get_meta(session.id) or SessionMeta.new()
            meta = replace(
                meta,
                last_active=iso_time(session.last_activity),
                users=tuple(sorted(set(meta.users) | session.users)),
            )
            await self.store.put_meta(session.id, meta)
        except StorageError as exc:
            log.warning("meta_save_failed", session=session.id, error=str(exc))

    # --- draining --------------------------------------------------------------------------

    def start_drain(self, timeout_s: float) -> None:
        """Drain in the background (admin API): callers follow progress in ``drain_status``.

        A drain that is already running is not started twice.
        """
        self._set_draining()
        if not self._drain_running:
            if self._background is None:
                raise RuntimeError("the session manager is not running")
            self._drain_running = True
            self._background.start_soon(self._drain_until_empty, timeout_s)

    async def _drain_until_empty(self, timeout_s: float) -> None:
        """Rounds of ``drain`` until no session is left (or undrain): a session that could not
        be made durable (storage down) is handed off as soon as storage is back."""
        try:
            while self.draining:
                await self.drain(timeout_s)
                if not self.sessions:
                    return
                await anyio.sleep(1.0)
        finally:
            self._drain_running = False

    def drain_status(self) -> dict[str, Any]:
        return {
            "draining": self.draining,
            "inProgress": self._drain_running or self._drain_lock.locked(),
            "sessionsLeft": sorted(self.sessions),
            "last": self.last_drain,
        }

    def _set_draining(self) -> None:
        if not self.draining:
            self.draining = True
            self.metrics.draining.set(1)
            log.info("drain_started", sessions=len(self.sessions))

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop taking sessions, make every live one durable, then send its clients away (1012).

        A session's clients are closed only after a flush left it clean, and from that moment
        it accepts no edits, so nothing a client was told about is lost in the hand-off.
        Concurrent drains (admin API, then SIGTERM) run one after the other; the second one
        finds whatever the first could not make durable.
        """
        self._set_draining()
        deadline = time.monotonic() + timeout_s
        async with self._drain_lock:
            results: dict[str, bool] = {}

            async def one(session: Session) -> None:
                results[session.id] = await self._hand_off(session, deadline, "worker draining")

            async with anyio.create_task_group() as tg:
                for session in list(self.sessions.values()):
                    tg.start_soon(one, session)
            lost = sorted(sid for sid, ok in results.items() if not ok)
            log.info("drain_finished", handed_off=len(results) - len(lost), not_durable=lost)
            self.last_drain = {
                "finishedAt": iso_time(time.time()),
                "handedOff": len(results) - len(lost),
                "notDurable": lost,
            }
            return {"handedOff": len(results) - len(lost), "notDurable": lost}

    async def hand_off(self, session_id: str, timeout_s: float) -> dict[str, Any]:
        """One session leaves this worker (a router moved it): flush, then clients away (1012).

        A client that comes back here later (a router that has not seen the ring change yet)
        simply loads the session again; both writes merge on the next load.
        """
        session = self.sessions.get(session_id)
        if session is None:
            return {"sessionId": session_id, "live": False, "durable": True}
        durable = await self._hand_off(
            session, time.monotonic() + timeout_s, "session moved to another worker"
        )
        return {"sessionId": session_id, "live": True, "durable": durable}

    async def _hand_off(self, session: Session, deadline: float, why: str) -> bool:
        """Flush until clean (or the deadline), close the clients, forget; True if durable.

        A git session's uncommitted edits are committed first (within the deadline), so the
        authors who made them are credited now rather than by whoever edits next elsewhere.
        """
        if session.is_git and session.editors:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                try:
                    await self.autocommit.commit(session)
                except Exception:  # logged in commit(); the edits are durable anyway
                    pass
        while True:
            if await self.flush(session, with_log=True) and not session.dirty:
                session.moving = True
                break
            if time.monotonic() >= deadline:
                break
            await anyio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        session.close_clients(CLOSE_RESTART, f"{why}; reconnect")
        if session.moving:
            await self._save_meta(session)
            self._forget(session)
            return True
        log.error(
            "hand_off_flush_failed",
            session=session.id,
            unflushed_bytes=session.unflushed_bytes,
            error=self.storage_error,
        )
        return False

    def undrain(self) -> None:
        self.draining = False
        self.metrics.draining.set(0)
        log.info("undrained")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The worker's background duty: group-commit, lag metrics, idle unload, auto-commit.

        ``started`` once it can take background jobs (commits, admin drains).
        """
        tick = self.settings.flush_interval_ms / 1000 / 4
        async with anyio.create_task_group() as background:
            self._background = background
            task_status.started()
            while True:
                await anyio.sleep(tick)
                try:
                    await self.flush_due(tick)
                    await self.reap_idle()
                    self.autocommit.start_due(self.sessions.values(), background.start_soon)
                except Exception:
                    # A bug here must not stop durability for every other session: log it
                    # loudly, count it, and try again next interval (updates stay in memory).
                    self.metrics.flush_errors.inc()
                    log.exception("flush_loop_error")
