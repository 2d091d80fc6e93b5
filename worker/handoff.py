"""Sessions leaving this worker: one at a time (a router moved it) or all of them (drain).

A session's clients are sent away (1012) only after a flush left it clean, and from that moment
it accepts no edit, so nothing a client was told about is lost in the hand-off. A drain is a
background job (admin API) or a deadline-bound step of shutdown (SIGTERM); concurrent drains run
one after the other, the second finding whatever the first could not make durable.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from contract import close_codes as codes
from contract.timefmt import iso_time

from .session import Session

if TYPE_CHECKING:
    from .manager import SessionManager

log = structlog.get_logger("worker.handoff")

_DRAIN_ROUND_S = 1.0  # between drain rounds while some session cannot be made durable


class HandOff:
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.draining = False
        self.last_drain: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._running = False

    # --- drain ----------------------------------------------------------------------------

    def start_drain(self, timeout_s: float) -> None:
        """Drain in the background (admin API): callers follow progress in ``status``.

        A drain that is already running is not started twice.
        """
        self._set_draining()
        if not self._running:
            self._running = True
            self.manager.spawn(lambda: self._drain_until_empty(timeout_s))

    async def _drain_until_empty(self, timeout_s: float) -> None:
        """Rounds of ``drain`` until no session is left (or undrain): a session that could not
        be made durable (storage down) is handed off as soon as storage is back."""
        try:
            while self.draining:
                await self.drain(timeout_s)
                if not self.manager.sessions:
                    return
                await anyio.sleep(_DRAIN_ROUND_S)
        finally:
            self._running = False

    def status(self) -> dict[str, Any]:
        return {
            "draining": self.draining,
            "inProgress": self._running or self._lock.locked(),
            "sessionsLeft": sorted(self.manager.sessions),
            "last": self.last_drain,
        }

    def _set_draining(self) -> None:
        if not self.draining:
            self.draining = True
            self.manager.metrics.draining.set(1)
            log.info("drain_started", sessions=len(self.manager.sessions))

    def undrain(self) -> None:
        self.draining = False
        self.manager.metrics.draining.set(0)
        log.info("undrained")

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop taking sessions, make every live one durable, then send its clients away."""
        self._set_draining()
        deadline = time.monotonic() + timeout_s
        async with self._lock:
            results: dict[str, bool] = {}

            async def one(session: Session) -> None:
                results[session.id] = await self._leave(session, deadline, "worker draining")

            async with anyio.create_task_group() as tg:
                for session in list(self.manager.sessions.values()):
                    tg.start_soon(one, session)
            lost = sorted(sid for sid, ok in results.items() if not ok)
            log.info("drain_finished", handed_off=len(results) - len(lost), not_durable=lost)
            self.last_drain = {
                "finishedAt": iso_time(),
                "handedOff": len(results) - len(lost),
                "notDurable": lost,
            }
            return {"handedOff": len(results) - len(lost), "notDurable": lost}

    # --- one session ------------------------------------------------------------------------

    async def hand_off(self, session_id: str, timeout_s: float) -> dict[str, Any]:
        """One session leaves this worker (a router moved it): flush, then clients away (1012).

        A client that comes back here later (a router that has not seen the ring change yet)
        simply loads the session again; both writes merge on the next load.
        """
        session = self.manager.sessions.get(session_id)
        if session is None:
            return {"sessionId": session_id, "live": False, "durable": True}
        durable = await self._leave(
            session, time.monotonic() + timeout_s, "session moved to another worker"
        )
        return {"sessionId": session_id, "live": True, "durable": durable}

    async def _leave(self, session: Session, deadline: float, why: str) -> bool:
        """Flush until clean (or the deadline), close the clients, forget; True if durable.

        A git session's uncommitted edits are committed first (within the deadline), so the
        authors who made them are credited now rather than by whoever edits next elsewhere.
        """
        manager = self.manager
        if session.is_git and session.editors:
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await manager.autocommit.try_commit(session)
        while True:
            if await manager.flusher.flush(session, with_log=True) and not session.dirty:
                session.moving = True
                # Released before its clients are sent away, so their reconnects find the
                # session free for the next owner at once.
                await manager.release(session)
                break
            if time.monotonic() >= deadline:
                break
            await anyio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        session.close_clients(codes.RESTART, f"{why}; reconnect")
        if not session.moving:
            session.fail_waiters("not stored: storage refused the write while the session left")
        if session.moving:
            await manager.save_meta(session)
            manager.forget(session)
            return True
        log.error(
            "hand_off_flush_failed",
            session=session.id,
            unflushed_bytes=session.unflushed_bytes,
            error=manager.health.error,
        )
        return False
