"""Live sessions on this worker, from claim to departure; the background duties.

The manager owns a session's life: it claims and loads it (``acquire``), and it is the one
place a session leaves (``leave``), whatever the reason: idle, asked for by a peer, handed off,
drained, fenced. Loads are single-flight: however many clients join a fresh session at the same
moment, one load runs and every joiner gets the same session (no room-start lock held for a
room's lifetime, no unguarded "already started" check). A load first claims the session
(``worker.ownership``: one live owner per session, whatever the routers think), then reads it;
a load that fails refuses the session, it never serves an empty one. Group commit lives in
``worker.flusher``, drains in ``worker.handoff``, the lease in ``worker.lease``; ``run`` is the
one task group they all run in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from contract import close_codes as codes
from contract.timefmt import iso_time

from .autocommit import AutoCommitter
from .departure import FENCED, IDLE, TO_PEER, Departure
from .flusher import Flusher, StorageHealth
from .handoff import HandOff
from .lease import Lease
from .limits import Limits
from .metrics import WorkerMetrics
from .ownership import Claim, ClaimFailed, Ownership
from .peers import PeerAnswer, Peers
from .session import Session
from .settings import Settings
from .storage import CorruptObject, SessionMeta, SessionStore, StorageError, Store
from .storage.ownership import OwnershipStore
from .stored_bytes import StoredBytes

log = structlog.get_logger("worker.manager")


class SessionUnavailable(RuntimeError):
    """The session cannot be served here now (storage down, corrupt state, draining)."""

    def __init__(self, reason: str, *, draining: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.draining = draining


_DRAINING = "worker is draining; reconnect to reach the new owner"
_FENCED = "this worker lost its storage lease; reconnect"
_SETTLE_ROUND_S = 0.5
_LOADER_HOLD_S = 1.0
_RETRY_ROUND_S = 0.5  # between flushes of a session leaving by a deadline


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        metrics: WorkerMetrics,
        coordination: Store | None = None,
        stored: StoredBytes | None = None,
    ) -> None:
        """``coordination``: the store leases and owner records go through; by default the
        sessions' own. The app gives it a separate instance of the same backend, so that a
        burst of session writes never queues the lease renewal behind it (a starved renewal
        would fence a healthy worker). ``stored``: the live sessions' stored bytes, fed by
        ``store``'s ``on_written`` (the app wires both)."""
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self.limits = Limits(settings.max_update_bytes, settings.max_doc_bytes)
        self._loading: dict[str, asyncio.Task[Session]] = {}
        self.health = StorageHealth()
        records = OwnershipStore(coordination if coordination is not None else store.store)
        self.lease = Lease(
            records,
            settings.worker_id,
            settings.advertise_address,
            settings.lease_ttl_ms,
            self.health,
            self._lease_lapsed,
        )
        self.peers = Peers(timeout_s=min(1.0, settings.lease_ttl_ms / 5000))
        self.ownership = Ownership(
            records,
            self.lease,
            self.peers,
            metrics,
            worker_id=settings.worker_id,
            address=settings.advertise_address,
        )
        self.stored = stored if stored is not None else StoredBytes(metrics)
        self.flusher = Flusher(settings, store, metrics, self.health, self.lease.valid, self.stored)
        self.autocommit = AutoCommitter(settings, store, metrics)
        self.handoff = HandOff(self.sessions, self.leave, self.spawn, metrics)
        self._background: TaskGroup | None = None  # run()'s task group
        self._settling = False

    @property
    def draining(self) -> bool:
        return self.handoff.draining

    async def aclose(self) -> None:
        """After the drain: tell storage we hold nothing any more, close the peer client."""
        await self.lease.stop()
        await self.peers.aclose()

    def spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs ``job`` in the manager's task group (``run`` must have started)."""
        if self._background is None:
            raise RuntimeError("the session manager is not running")
        self._background.start_soon(job)

    # --- joining ---------------------------------------------------------------------------

    async def acquire(self, session_id: str) -> Session:
        """The live session, claiming and loading it first if needed.

        Raises SessionUnavailable, or ``worker.ownership.NotOwner`` when another live worker
        owns it. The session comes reserved: it is not unloaded until the caller attaches its
        client (``Session.attach``) or gives it back (``Session.unreserve``).
        """
        if self.draining:
            raise SessionUnavailable(_DRAINING, draining=True)
        session = self.sessions.get(session_id)
        if session is not None and session.fenced:
            raise SessionUnavailable(
                "this worker is still writing what it held when it lost its storage lease; retry"
            )
        while session is None or session.moving:
            task = self._loading.get(session_id)
            if task is None:
                task = asyncio.create_task(self._load(session_id), name=f"load:{session_id}")
                task.add_done_callback(self._loaded)
                self._loading[session_id] = task
            session = await asyncio.shield(task)
            if self.sessions.get(session_id) is not session:
                session = None  # it left before we resumed (let go to a peer): claim again
        session.reserve()
        return session

    @asynccontextmanager
    async def using(self, session_id: str) -> AsyncIterator[Session]:
        """The live session for one request that attaches no client (admin, HTTP API): kept
        loaded while the request uses it."""
        session = await self.acquire(session_id)
        try:
            yield session
        finally:
            session.unreserve()

    def _loaded(self, task: asyncio.Task[Session]) -> None:
        for sid, t in list(self._loading.items()):
            if t is task:
                del self._loading[sid]
        if not task.cancelled() and task.exception() is None:
            # The load's own reservation (``_load``) covers the moment until its waiters resume
            # and reserve for themselves; a peer asking meanwhile must not be told it is idle.
            asyncio.get_running_loop().call_later(_LOADER_HOLD_S, task.result().unreserve)

    async def _load(self, session_id: str) -> Session:
        started = time.perf_counter()
        # The session's listing goes out with the ownership record's read: when the claim is
        # its first ever (Claim.first), no worker can have written or compacted anything the
        # listing missed, so it is the whole load (a new session: the record's read and the
        # listing, then the claim; two round trips, three requests). Otherwise it is thrown
        # away and the load lists again, after the claim.
        survey = asyncio.ensure_future(self.store.survey(session_id))
        try:
            claim = await self.ownership.claim(session_id)
        except ClaimFailed as exc:
            _discard(survey)
            log.warning("session_claim_failed", session=session_id, error=exc.reason)
            raise SessionUnavailable(exc.reason) from None
        except BaseException:
            _discard(survey)
            raise
        if not claim.first:
            _discard(survey)
        try:
            if claim.first:
                loaded = await self.store.load(session_id, await survey, exclusive=True)
            else:
                loaded = await self.store.load(session_id)
        except CorruptObject as exc:
            await self.ownership.release(session_id, claim)
            log.error("session_load_failed", session=session_id, error=str(exc))
            raise SessionUnavailable(
                f"stored state is corrupt ({exc}); an operator must repair it"
            ) from None
        except StorageError as exc:
            await self.ownership.release(session_id, claim)
            self.health.failed(exc)
            log.warning("session_load_failed", session=session_id, error=str(exc))
            raise SessionUnavailable(f"storage unavailable ({exc}); retry shortly") from None
        outbox = self.flusher.outbox(session_id)
        session = Session(
            session_id, loaded.docs, self.settings.worker_id, self.metrics, outbox, self.limits
        )
        session.is_git = loaded.meta is not None and loaded.meta.is_git_repo
        session.claim = claim
        session.lease_valid = self.lease.valid
        session.reserve()  # released by _loaded, once the joiners have reserved it themselves
        if self.draining:
            self.flusher.forget(session_id)
            await self.ownership.release(session_id, claim)
            raise SessionUnavailable(_DRAINING, draining=True)
        self.flusher.loaded(session_id, loaded.stored, len(loaded.keys))
        self.stored.listed_log(session_id, loaded.log_bytes)
        self.sessions[session_id] = session
        self.metrics.sessions_active.set(len(self.sessions))
        self.metrics.session_load_seconds.observe(time.perf_counter() - started)
        log.info(
            "session_loaded",
            session=session_id,
            docs=len(loaded.docs),
            objects=len(loaded.keys),
            epoch=claim.epoch,
            seconds=round(time.perf_counter() - started, 4),
        )
        return session

    async def release(self, session: Session) -> None:
        """Gives up ownership of a session that is durable and leaving (unload, hand-off)."""
        claim: Claim | None = session.claim
        if claim is not None:
            session.claim = None
            await self.ownership.release(session.id, claim)

    # --- durability and status ---------------------------------------------------------------

    def update_lag_metrics(self) -> tuple[int, float]:
        """(bytes held only in memory, age in seconds of the oldest of them); the documents'
        size gauges are refreshed along with them."""
        sizes = [session.size.estimate for session in self.sessions.values()]
        self.metrics.session_doc_bytes.set(sum(sizes))
        self.metrics.session_doc_bytes_max.set(max(sizes, default=0))
        return self.flusher.update_lag_metrics()

    # --- leaving ---------------------------------------------------------------------------

    async def reap_idle(self) -> None:
        idle_s = self.settings.session_idle_ms / 1000
        now = time.monotonic()
        for session in list(self.sessions.values()):
            idle = session.idle_since
            if idle is not None and not session.reserved and now - idle >= idle_s:
                await self.leave(session, IDLE)

    async def leave(self, session: Session, why: Departure, deadline: float | None = None) -> bool:
        """The one way a session leaves this worker; True once it has left, durable.

        In order: a git session's uncommitted edits are committed (``why.commit_first``: the
        authors who made them are credited now, not by whoever edits next elsewhere); every
        update and log entry is flushed, retried until ``deadline`` if there is one; the
        session is compacted (``why.compact``); from then on it accepts no edit (``moving``),
        its ownership record is released (before its clients are sent away, so that their
        reconnects find it free for the next owner at once), its clients are closed with 1012
        (``why.clients_away``), its metadata is saved and it is forgotten.

        It stays when a client came back meanwhile (``why.only_if_idle``) or when storage
        refused; a session sent away without being durable fails the acknowledgements still
        waiting (nothing unstored is ever acknowledged) and stays, to be written once storage
        takes it.
        """
        if why.commit_first and session.is_git and session.editors:
            if deadline is None:
                # Nobody is editing any more, so its cooldown would run out after it is gone.
                # Storage refusing keeps the session (the next round retries); any other
                # failure is the local repository's (logged and counted by the committer) and
                # must not pin the session: its edits are in storage either way.
                try:
                    await self.autocommit.commit(session)
                except StorageError:
                    return False
                except Exception:
                    pass
            else:
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                    await self.autocommit.try_commit(session)
        while not (durable := await self._flushed(session)):
            if deadline is None or time.monotonic() >= deadline:
                break
            await anyio.sleep(min(_RETRY_ROUND_S, max(0.0, deadline - time.monotonic())))
        if why.only_if_idle and self._in_use(session):
            return False
        if durable and why.compact and self.flusher.has_segments(session.id):
            # Nobody is connected (an idle unload): a client may still come back meanwhile.
            await self.flusher.compact(session.id)
            durable = not self._in_use(session) and self.sessions.get(session.id) is session
            if not durable:
                return False
        if durable:
            session.moving = True
            if not why.fenced or self.lease.valid():
                await self.release(session)
        if why.clients_away is not None:
            session.close_clients(codes.RESTART, f"{why.clients_away}; reconnect")
        if not durable:
            if why.clients_away is not None:
                session.outbox.fail_waiters(
                    "not stored: storage refused the write while the session left"
                )
                log.error(
                    "leave_flush_failed",
                    session=session.id,
                    reason=why.event,
                    unflushed_bytes=session.outbox.unflushed_bytes,
                    error=self.health.error,
                )
            return False
        if not why.fenced:
            await self.save_meta(session)
        compact_after = (
            why.compact_after and not why.fenced and self.flusher.has_segments(session.id)
        )
        self.forget(session)
        if session.is_git:
            await self.autocommit.drop_cache(session.id)
        log.info(why.event, session=session.id)
        if compact_after:
            # Gone from here, its clients on their way to the next owner and its record
            # released: compacting now delays nobody, and is safe beside the next owner's load
            # and writes (as a takeover mid-compaction is: worker.storage.session_store).
            left_s = float("inf") if deadline is None else max(0.0, deadline - time.monotonic())
            with anyio.move_on_after(left_s):
                await self.flusher.compact(session.id)
        return True

    async def _flushed(self, session: Session) -> bool:
        return await self.flusher.flush(session.id, with_log=True) and not session.outbox.dirty

    @staticmethod
    def _in_use(session: Session) -> bool:
        return bool(session.client_count or session.reserved or session.outbox.dirty)

    # --- ownership -------------------------------------------------------------------------

    async def peer_answer(self, session_id: str, *, release_idle: bool) -> PeerAnswer:
        """What another worker that wants ``session_id`` is told (``/peer/sessions/{id}``).

        A session held here with no client is let go at once when asked (flushed first): its
        clients are gone, so the asker's clients should not wait for SESSION_IDLE_MS.
        """
        session = self.sessions.get(session_id)
        state = "absent"
        if session_id in self._loading:
            state = "live"
        elif session is not None and not session.moving and not session.fenced:
            state = "live"
            if release_idle and not session.client_count and session.reserved == 0:
                state = "released" if await self.leave(session, TO_PEER) else "live"
        return PeerAnswer(
            worker=self.settings.worker_id,
            incarnation=self.lease.incarnation,
            lease_valid=self.lease.valid(),
            session=state,
            clients=session.client_count if session is not None else 0,
        )

    def _lease_lapsed(self) -> None:
        """The lease ran out: others may take these sessions over soon, so stop serving them.

        Edits are already refused (every edit checks the lease); clients are sent away now to
        reconnect to whoever owns the session next, and acknowledgements still waiting fail.
        What is held is written as soon as storage takes it (segments merge on any load), then
        the sessions are forgotten: one that is still ours is claimed again from storage.
        """
        for session in self.sessions.values():
            if session.fenced:
                continue
            session.fenced = True
            session.outbox.fail_waiters("not stored: this worker lost contact with storage")
            session.close_clients(codes.RESTART, _FENCED)
        if self.sessions and not self._settling and self._background is not None:
            self._settling = True
            self.spawn(self._settle_fenced)

    async def _settle_fenced(self) -> None:
        try:
            while fenced := [s for s in self.sessions.values() if s.fenced]:
                for session in fenced:
                    await self.leave(session, FENCED)
                await anyio.sleep(_SETTLE_ROUND_S)
        finally:
            self._settling = False

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
        await self.autocommit.clear_caches()
        async with anyio.create_task_group() as background:
            self._background = background
            await background.start(self.lease.run)
            task_status.started()
            while True:
                await anyio.sleep(tick)
                try:
                    await self.flusher.flush_due(tick)
                    await self.reap_idle()
                    self.autocommit.start_due(self.sessions.values(), background.start_soon)
                except Exception:
                    # A bug here must not stop durability for every other session: log it
                    # loudly, count it, and try again next interval (updates stay in memory).
                    self.metrics.flush_errors.inc()
                    log.exception("flush_loop_error")


def _discard(task: asyncio.Future[Any]) -> None:
    """A speculative request no longer wanted: cancelled, its outcome (an error too) dropped."""
    task.cancel()
    task.add_done_callback(_drop_outcome)


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
