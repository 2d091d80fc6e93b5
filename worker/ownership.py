"""One live owner per session: claiming it, and the takeover rule.

The router's hash only proposes a worker; the session's owner record in storage decides
(``worker.storage.ownership``). A worker serves a session only after it wrote itself into that
record by compare-and-swap, while its own lease (``worker.lease``) is valid. A claim that finds
the record held by another worker takes it over only when that worker cannot be serving it:

=====================================================  ==========================  ===========
what the claimant finds                                 decision                    reason
=====================================================  ==========================  ===========
no record, or a released one                            claim now                   (none)
our own record (this process, e.g. after a fence)       claim now                   (none)
our WORKER_ID, another incarnation                      take over now               restarted
holder's address refuses connections                    take over now               gone
someone else answers at the holder's address            take over now               gone
holder answers as another incarnation                   take over now               restarted
holder answers: its lease has lapsed (it fenced)        take over now               fenced
holder answers: it does not hold the session            take over now               stale
holder answers: it holds it with no client              it releases; claim now      (none)
holder answers: it holds it with clients                clients go there            (redirect)
holder unreachable; its lease says it stopped cleanly   take over now               stopped
holder unreachable; lease of another incarnation        take over now               restarted
holder unreachable; lease unchanged for its TTL here    take over                   expired
holder unreachable; lease still moving / not yet T      wait (≤ T), asking again    —
=====================================================  ==========================  ===========

Only the last rows make anyone wait, and only for an owner that is unreachable but maybe alive.
Because the holder stops accepting edits T/5 before anyone may take over (``worker.lease``),
two workers never accept edits of one session at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import structlog

from contract.timefmt import iso_time

from .lease import Lease, lease_clock
from .metrics import WorkerMetrics
from .peers import PeerAnswer, PeerGone, Peers, PeerUnreachable
from .storage import StorageError
from .storage.ownership import OwnerRecord, OwnershipStore

log = structlog.get_logger("worker.ownership")

_ASK_AGAIN_S = 0.5  # while waiting for an unreachable holder's lease to run out


class NotOwner(Exception):
    """Another live worker owns the session; its clients belong there."""

    def __init__(self, record: OwnerRecord) -> None:
        super().__init__(
            f"session is live on worker {record.worker} ({record.address}); "
            "connect through a router"
        )
        self.record = record


class ClaimFailed(Exception):
    """The session cannot be claimed now (no lease, storage refused, a takeover is pending)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Claim:
    """This worker's reign over one session: the record it wrote and that record's version.

    ``first``: the record was written where there was none. Records are never deleted, so no
    worker has ever owned the session before: nothing a worker writes can be missing from a
    listing taken at any time before this claim (``SessionManager`` lists a new session's
    objects alongside the claim instead of after it).
    """

    record: OwnerRecord
    version: str
    first: bool = False

    @property
    def epoch(self) -> int:
        return self.record.epoch


@dataclass
class _Observation:
    incarnation: str
    renewals: int
    since: float  # lease clock, when we first saw this (incarnation, renewals)


class Ownership:
    def __init__(
        self,
        records: OwnershipStore,
        lease: Lease,
        peers: Peers,
        metrics: WorkerMetrics,
        *,
        worker_id: str,
        address: str,
    ) -> None:
        self.records = records
        self.lease = lease
        self.peers = peers
        self.metrics = metrics
        self.worker_id = worker_id
        self.address = address
        self._observed: dict[str, _Observation] = {}

    async def claim(self, session_id: str) -> Claim:
        """Makes this worker the session's owner; raises NotOwner or ClaimFailed."""
        started = lease_clock()
        patience = self.lease.ttl_s + 2 * self.peers.timeout_s
        while True:
            if not await self.lease.wait_valid(self.lease.renew_every_s):
                raise ClaimFailed(
                    "this worker holds no valid storage lease (storage unreachable?); retry"
                )
            try:
                found = await self.records.read_owner(session_id)
                if found is None:
                    claimed = await self._write(session_id, None, 1, None)
                else:
                    record, version = found
                    reason = await self._decide(session_id, record)
                    if reason == "wait":
                        waited = lease_clock() - started
                        if waited >= patience:
                            raise ClaimFailed(
                                f"worker {record.worker} ({record.address}) owns the session "
                                "and does not answer; it is taken over once its lease runs out "
                                f"(at most {self.lease.ttl_s:.0f}s); retry"
                            )
                        await anyio.sleep(min(_ASK_AGAIN_S, patience - waited))
                        continue
                    claimed = await self._write(session_id, version, record.epoch + 1, reason)
            except StorageError as exc:
                raise ClaimFailed(f"storage unavailable ({exc}); retry shortly") from None
            if claimed is not None:
                return claimed
            # Lost a race (another claim, a release): read the record again.

    async def _write(
        self, session_id: str, version: str | None, epoch: int, reason: str | None
    ) -> Claim | None:
        record = OwnerRecord(
            worker=self.worker_id,
            incarnation=self.lease.incarnation,
            epoch=epoch,
            since=iso_time(),
            address=self.address,
        )
        written = await self.records.write_owner(session_id, record, version)
        if written is None:
            return None
        if reason is not None:
            self.metrics.takeovers.labels(reason).inc()
            log.warning("ownership_takeover", session=session_id, reason=reason, epoch=epoch)
        return Claim(record, written, first=version is None)

    async def _decide(self, session_id: str, record: OwnerRecord) -> str | None:
        """None: claim it plainly; a reason: take it over; "wait"; or raise NotOwner."""
        if record.released:
            return None
        if record.worker == self.worker_id:
            return None if record.incarnation == self.lease.incarnation else "restarted"
        try:
            answer = await self.peers.ask(record.address, session_id, release_idle=True)
        except PeerGone:
            return "gone"
        except PeerUnreachable as exc:
            log.info("owner_unreachable", session=session_id, owner=record.worker, error=str(exc))
            return await self._judge_lease(record)
        return self._judge_answer(record, answer)

    def _judge_answer(self, record: OwnerRecord, answer: PeerAnswer) -> str | None:
        if answer.worker != record.worker:
            return "gone"
        if answer.incarnation != record.incarnation:
            return "restarted"
        if not answer.lease_valid:
            return "fenced"
        if answer.session == "absent":
            return "stale"
        if answer.session == "released":
            return None  # it wrote the release; our swap from the old version fails and re-reads
        self.metrics.ownership_refused.inc()
        raise NotOwner(record)

    async def _judge_lease(self, record: OwnerRecord) -> str:
        found = await self.records.read_lease(record.worker)
        if found is None:
            return "gone"
        lease = found[0]
        if lease.incarnation != record.incarnation:
            return "restarted"
        if lease.stopped:
            return "stopped"
        now = lease_clock()
        seen = self._observed.get(record.worker)
        if seen is None or (seen.incarnation, seen.renewals) != (lease.incarnation, lease.renewals):
            self._observed[record.worker] = _Observation(lease.incarnation, lease.renewals, now)
            return "wait"
        if now - seen.since >= lease.ttl_ms / 1000:
            return "expired"
        return "wait"

    async def release(self, session_id: str, claim: Claim) -> None:
        """Lets the session go (unload, hand-off): anyone may claim it at once. Best effort: a
        record that moved meanwhile is someone else's now and stays as it is."""
        try:
            await self.records.write_owner(session_id, claim.record.release(), claim.version)
        except StorageError as exc:
            log.warning("ownership_release_failed", session=session_id, error=str(exc))

    async def lookup(self, session_id: str) -> OwnerRecord | None:
        found = await self.records.read_owner(session_id)
        return None if found is None else found[0]
