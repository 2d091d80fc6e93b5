"""Live sessions on this worker: load once, serve, unload when idle; the background duties.

Loads are single-flight: however many clients join a fresh session at the same moment, one load
runs and every joiner gets the same session (no room-start lock held for a room's lifetime, no
unguarded "already started" check). A load that fails refuses the session; it never serves an
empty one. Group commit lives in ``worker.flusher``, drain and hand-off in ``worker.handoff``;
``run`` is the one task group they all run in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from contract.timefmt import iso_time

from .autocommit import AutoCommitter
from .flusher import Flusher, StorageHealth
from .handoff import HandOff
from .metrics import WorkerMetrics
from .session import Session
from .settings import Settings
from .storage import CorruptObject, SessionMeta, SessionStore, StorageError

log = structlog.get_logger("worker.manager")


class SessionUnavailable(RuntimeError):
    """The session cannot be served here now (storage down, corrupt state, draining)."""

    def __init__(self, reason: str, *, draining: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.draining = draining


_DRAINING = "worker is draining; reconnect to reach the new owner"


class SessionManager:
    def __init__(self, settings: Settings, store: SessionStore, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self._loading: dict[str, asyncio.Task[Session]] = {}
        self.health = StorageHealth()
        self.flusher = Flusher(settings, store, metrics, self.health)
        self.autocommit = AutoCommitter(settings, store, metrics)
        self.handoff = HandOff(self)
        self._background: TaskGroup | None = None  # run()'s task group

    @property
    def draining(self) -> bool:
        return self.handoff.draining

    def spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs ``job`` in the manager's task group (``run`` must have started)."""
        if self._background is None:
            raise RuntimeError("the session manager is not running")
        self._background.start_soon(job)

    # --- joining ---------------------------------------------------------------------------

    async def acquire(self, session_id: str) -> Session:
        """The live session, loading it first if needed; raises SessionUnavailable."""
        if self.draining:
            raise SessionUnavailable(_DRAINING, draining=True)
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
            self.health.failed(exc)
            log.warning("session_load_failed", session=session_id, error=str(exc))
            raise SessionUnavailable(f"storage unavailable ({exc}); retry shortly") from None
        session = Session(session_id, loaded.docs, self.settings.worker_id, self.metrics)
        session.is_git = loaded.meta is not None and loaded.meta.is_git_repo
        if self.draining:
            raise SessionUnavailable(_DRAINING, draining=True)
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

    # --- durability and status ---------------------------------------------------------------

    def update_lag_metrics(self) -> tuple[int, float]:
        """(bytes held only in memory, age in seconds of the oldest of them)."""
        return self.flusher.update_lag_metrics(list(self.sessions.values()))

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
        its cooldown would only run out after the session is gone. A commit that fails for
        want of storage keeps the session (its next round retries); any other failure is the
        local repository's (logged and counted by the committer) and must not pin the session:
        its edits are in storage either way.
        """
        if session.is_git and session.editors:
            try:
                await self.autocommit.commit(session)
            except StorageError:
                return False
            except Exception:  # logged with its traceback and counted in commit()
                pass
        if not await self.flusher.flush(session, with_log=True):
            return False
        if session.client_count or session.dirty:
            return False
        await self.flusher.compact(session)
        if session.client_count or session.dirty or self.sessions.get(session.id) is not session:
            return False
        await self.save_meta(session)
        self.forget(session)
        log.info("session_unloaded", session=session.id)
        return True

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.flusher.forget(session.id)
            self.autocommit.forget(session.id)
            self.metrics.documents_loaded.dec(session.documents)
            self.metrics.sessions_active.set(len(self.sessions))

    async def save_meta(self, session: Session) -> None:
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

    # --- the background duties -------------------------------------------------------------

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
                    await self.flusher.flush_due(list(self.sessions.values()), tick)
                    await self.reap_idle()
                    self.autocommit.start_due(self.sessions.values(), background.start_soon)
                except Exception:
                    # A bug here must not stop durability for every other session: log it
                    # loudly, count it, and try again next interval (updates stay in memory).
                    self.metrics.flush_errors.inc()
                    log.exception("flush_loop_error")
