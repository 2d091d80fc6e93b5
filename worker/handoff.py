"""Drains and hand-offs: all of this worker's sessions leave (drain), or one (a router moved it).

Each session leaves through the manager's one ``leave`` (``worker.manager``): its clients are
sent away (1012) only after a flush left it clean, and from that moment it accepts no edit, so
nothing a client was told about is lost in the hand-off. A drain is a background job (admin
API) or a deadline-bound step of shutdown (SIGTERM); concurrent drains run one after the other,
the second finding whatever the first could not make durable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import structlog

from contract.timefmt import iso_time

from .departure import DRAINED, HANDED_OFF, Departure
from .metrics import WorkerMetrics
from .session import Session

Leave = Callable[[Session, Departure, float | None], Awaitable[bool]]
"""``leave(session, why, deadline)``: True once it has left, durable (``worker.manager``)."""
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]

log = structlog.get_logger("worker.handoff")

_DRAIN_ROUND_S = 1.0  # between drain rounds while some session cannot be made durable


class HandOff:
    def __init__(
        self, sessions: dict[str, Session], leave: Leave, spawn: Spawn, metrics: WorkerMetrics
    ) -> None:
        """``sessions``: the live sessions (the manager's, read here, never changed);
        ``leave``: how one leaves; ``spawn``: runs a background job in the manager's task
        group."""
        self.sessions = sessions
        self.leave = leave
        self.spawn = spawn
        self.metrics = metrics
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
            self.spawn(lambda: self._drain_until_empty(timeout_s))

    async def _drain_until_empty(self, timeout_s: float) -> None:
        """Rounds of ``drain`` until no session is left (or undrain): a session that could not
        be made durable (storage down) is handed off as soon as storage is back."""
        try:
            while self.draining:
                await self.drain(timeout_s)
                if not self.sessions:
                    return
                await anyio.sleep(_DRAIN_ROUND_S)
        finally:
            self._running = False

    def status(self) -> dict[str, Any]:
        return {
            "draining": self.draining,
            "inProgress": self._running or self._lock.locked(),
            "sessionsLeft": sorted(self.sessions),
            "last": self.last_drain,
        }

    def _set_draining(self) -> None:
        if not self.draining:
            self.draining = True
            self.metrics.draining.set(1)
            log.info("drain_started", sessions=len(self.sessions))

    def undrain(self) -> None:
        self.draining = False
        self.metrics.draining.set(0)
        log.info("undrained")

    async def drain(self, timeout_s: float) -> dict[str, Any]:
        """Stop taking sessions, make every live one durable, then send its clients away."""
        self._set_draining()
        deadline = time.monotonic() + timeout_s
        async with self._lock:
            results: dict[str, bool] = {}

            async def one(session: Session) -> None:
                results[session.id] = await self.leave(session, DRAINED, deadline)

            async with anyio.create_task_group() as tg:
                for session in list(self.sessions.values()):
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
        session = self.sessions.get(session_id)
        if session is None:
            return {"sessionId": session_id, "live": False, "durable": True}
        durable = await self.leave(session, HANDED_OFF, time.monotonic() + timeout_s)
        return {"sessionId": session_id, "live": True, "durable": durable}
