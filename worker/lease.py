"""This worker's lease: the heartbeat in storage that entitles it to own sessions.

The rule both sides keep (``LEASE_TTL_MS`` = T, default 10 s):

- the holder renews every T/5 and, if it has not renewed successfully since T - T/5 after the
  *start* of its last successful renewal, stops accepting edits at once (``on_lapse``): it
  cannot tell whether it alone lost storage or everyone did, so it must assume others may take
  its sessions;
- another worker takes over a session of an unreachable holder only after reading the holder's
  lease unchanged for T on its own clock (``worker.ownership``); it reads it after the
  holder's last write completed, so its takeover comes at least T/5 after the holder stopped.

No clock is compared between machines: each side measures durations on its own clock, which
keeps counting while the machine or VM is suspended (CLOCK_BOOTTIME), so a frozen holder that
wakes up finds its lease expired before it handles anything (``valid`` is checked per edit).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from contract.timefmt import iso_time

from .flusher import StorageHealth
from .storage import StorageError
from .storage.ownership import LeaseRecord, OwnershipStore

log = structlog.get_logger("worker.lease")

_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def lease_clock() -> float:
    """Seconds on a clock that never jumps and keeps counting through suspends."""
    return time.clock_gettime(_CLOCK)


class Lease:
    def __init__(
        self,
        records: OwnershipStore,
        worker_id: str,
        address: str,
        ttl_ms: int,
        health: StorageHealth,
        on_lapse: Callable[[], None],
    ) -> None:
        self.records = records
        self.worker_id = worker_id
        self.address = address
        self.ttl_s = ttl_ms / 1000
        self.ttl_ms = ttl_ms
        self.health = health
        self.on_lapse = on_lapse
        self.incarnation = secrets.token_hex(8)
        self.valid_until = 0.0  # lease clock; 0: never held
        self.established = False
        self.lapsed = False
        self._version: str | None = None
        self._renewals = 0
        self._held = anyio.Event()  # set while the lease is valid (reset on a lapse)

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 5

    @property
    def margin_s(self) -> float:
        """How long before others may take over the holder stops: T/5."""
        return self.ttl_s / 5

    def valid(self) -> bool:
        return lease_clock() < self.valid_until

    async def wait_valid(self, timeout_s: float) -> bool:
        """Until the lease is valid (the first renewal at start-up, a restored one after a
        lapse), at most ``timeout_s``; True when it is."""
        if not self.valid():
            with anyio.move_on_after(timeout_s):
                await self._held.wait()
        return self.valid()

    def remaining_s(self) -> float:
        return max(0.0, self.valid_until - lease_clock())

    def describe(self) -> dict[str, object]:
        return {
            "incarnation": self.incarnation,
            "valid": self.valid(),
            "validForMs": int(self.remaining_s() * 1000),
            "ttlMs": self.ttl_ms,
            "renewals": self._renewals,
        }

    def _record(self, renewals: int, *, stopped: bool = False) -> LeaseRecord:
        return LeaseRecord(
            worker=self.worker_id,
            incarnation=self.incarnation,
            address=self.address,
            renewals=renewals,
            renewed_at=iso_time(),
            ttl_ms=self.ttl_ms,
            stopped=stopped,
        )

    async def renew(self) -> bool:
        """One renewal; True when storage took it (the lease is then valid for T - T/5)."""
        started = lease_clock()
        try:
            with anyio.fail_after(self.renew_every_s):
                written = await self._write(self._record(self._renewals + 1))
        except (StorageError, TimeoutError) as exc:
            if not isinstance(exc, StorageError):
                exc = StorageError(f"lease renewal took longer than {self.renew_every_s:.1f}s")
            self.health.failed(exc)
            log.warning(
                "lease_renewal_failed",
                error=str(exc),
                valid_for_s=round(self.remaining_s(), 2),
            )
            return False
        if not written:
            return False
        self._renewals += 1
        self.valid_until = started + self.ttl_s - self.margin_s
        self._held.set()
        self.health.recovered()
        if not self.established:
            self.established = True
            log.info("lease_acquired", incarnation=self.incarnation, ttl_ms=self.ttl_ms)
        if self.lapsed:
            self.lapsed = False
            log.info("lease_restored", incarnation=self.incarnation)
        return True

    async def _write(self, record: LeaseRecord) -> bool:
        """Compare-and-swap our record; re-reads once when it moved under us."""
        version = await self.records.write_lease(self.worker_id, record, self._version)
        if version is None:
            found = await self.records.read_lease(self.worker_id)
            current = None if found is None else found[0]
            if current is not None and current.incarnation != self.incarnation and self.established:
                # Someone else wrote our lease while we hold it: another process runs with our
                # WORKER_ID. Say so loudly; our sessions may now be served twice.
                log.error(
                    "lease_taken",
                    other_incarnation=current.incarnation,
                    other_address=current.address,
                    fix="give every worker process its own WORKER_ID",
                )
                self._fence_now()
            elif current is not None and current.incarnation != self.incarnation:
                log.info(
                    "lease_taken_over",
                    previous_incarnation=current.incarnation,
                    previous_address=current.address,
                )
            version = await self.records.write_lease(
                self.worker_id, record, None if found is None else found[1]
            )
        if version is None:
            log.warning("lease_renewal_lost_race", fix="give every worker its own WORKER_ID")
            return False
        self._version = version
        return True

    def _fence_now(self) -> None:
        self.valid_until = 0.0
        self.check()

    def check(self) -> None:
        """Calls ``on_lapse`` once when a held lease has run out."""
        if self.established and not self.lapsed and not self.valid():
            self.lapsed = True
            self._held = anyio.Event()
            log.error(
                "lease_lapsed",
                consequence="this worker stops accepting edits and sends its clients away",
                error=self.health.error,
                fix="check this worker's network path to storage",
            )
            self.on_lapse()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renews forever; ``started`` at once (readiness waits for ``established``).

        A watchdog beside the renewals fences at the exact moment the lease runs out, even
        while a renewal request hangs.
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            task_status.started()
            while True:
                ok = await self.renew()
                await anyio.sleep(self.renew_every_s if ok else self.renew_every_s / 2)

    async def _watch(self) -> None:
        while True:
            self.check()
            held = self.established and not self.lapsed
            await anyio.sleep(max(self.remaining_s(), 0.01) if held else 0.1)

    async def stop(self) -> None:
        """A clean exit: says so in storage, so others take our leftovers without waiting."""
        if not self.established:
            return
        self.valid_until = 0.0
        try:
            with anyio.fail_after(2):
                await self._write(self._record(self._renewals + 1, stopped=True))
        except (StorageError, TimeoutError) as exc:
            log.warning("lease_stop_not_written", error=str(exc))
