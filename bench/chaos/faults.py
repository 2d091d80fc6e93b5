"""Faults: each kind injects and heals one thing; ``Injector`` plays a schedule and logs it.

| kind | inject | heal |
| --- | --- | --- |
| ``partition`` | drop every packet between two hosts (both ways) | remove the rules |
| ``partition_oneway`` | drop packets from one host to the other only | remove the rules |
| ``delay`` | the host's sends wait D ± J ms (netem, or the delay line) | remove it |
| ``loss`` | the host loses a share of what it sends | remove it |
| ``kill`` | SIGKILL a worker or router | start it again, same name and address |
| ``stop`` | SIGSTOP a worker or router | SIGCONT |
| ``storage_restart`` | stop SeaweedFS (SIGTERM; SIGKILL after 10 s) | start it on its data dir |

Every fault ends up in ``RUN_DIR/faults.jsonl`` once healed, one JSON object a line:
``{"id", "kind", "target", "start", "end", "detail"}``, times from ``time.time()``. ``start``
is when the injection began, ``end`` when the heal began: the moment the cause was removed
(rules deleted, SIGCONT sent, the killed process or storage started again; their start-up
counts as recovery, not as the fault). ``detail`` holds the drawn parameters and how the fault
was made (``via``), and ``error`` if the injection failed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .cluster import Cluster
from .schedule import Planned, describe


class Fault(ABC):
    def __init__(self, planned: Planned, number: int, cluster: Cluster) -> None:
        self.planned = planned
        self.id = f"f{number}"
        self.cluster = cluster
        self.detail: dict[str, Any] = dict(planned.params)
        self.start: float | None = None
        self.end: float | None = None

    @property
    def kind(self) -> str:
        return self.planned.kind

    @property
    def target(self) -> str:
        return self.planned.target

    @abstractmethod
    async def inject(self) -> None: ...

    @abstractmethod
    async def heal(self) -> None: ...

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "start": self.start,
            "end": self.end,
            "detail": self.detail,
        }


class Partition(Fault):
    async def inject(self) -> None:
        a, b = self.planned.hosts
        oneway = self.kind == "partition_oneway"
        self.detail.update(await self.cluster.network.cut(self.id, a, b, oneway=oneway))

    async def heal(self) -> None:
        await self.cluster.network.uncut(self.id)


class Delay(Fault):
    async def inject(self) -> None:
        delay, jitter = self.detail["delay_ms"] / 1000, self.detail["jitter_ms"] / 1000
        self.detail.update(await self.cluster.network.delay(self.target, delay, jitter))

    async def heal(self) -> None:
        await self.cluster.network.undelay(self.target)


class Loss(Fault):
    async def inject(self) -> None:
        self.detail.update(await self.cluster.network.lose(self.target, self.detail["loss"]))

    async def heal(self) -> None:
        await self.cluster.network.unlose(self.target)


class Kill(Fault):
    async def inject(self) -> None:
        service = self.cluster.services[self.target]
        self.detail["pid"] = service.pid
        await service.kill()

    async def heal(self) -> None:
        service = self.cluster.services[self.target]
        service.start()
        self.detail["new_pid"] = service.pid


class Stop(Fault):
    async def inject(self) -> None:
        service = self.cluster.services[self.target]
        service.held = True
        self.detail["pid"] = service.pid
        service.signal(signal.SIGSTOP)

    async def heal(self) -> None:
        service = self.cluster.services[self.target]
        service.signal(signal.SIGCONT)
        service.held = False


class StorageRestart(Fault):
    async def inject(self) -> None:
        began = time.monotonic()
        await self.cluster.storage.stop()
        self.detail["stop_s"] = round(time.monotonic() - began, 3)

    async def heal(self) -> None:
        began = time.monotonic()
        await self.cluster.storage.start()
        self.detail["ready_s"] = round(time.monotonic() - began, 3)


_KINDS: dict[str, type[Fault]] = {
    "partition": Partition,
    "partition_oneway": Partition,
    "delay": Delay,
    "loss": Loss,
    "kill": Kill,
    "stop": Stop,
    "storage_restart": StorageRestart,
}


class Injector:
    """Plays a schedule against a cluster; ``heal_all`` undoes whatever is still active."""

    def __init__(self, cluster: Cluster, say: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.say = say
        self.active: dict[str, Fault] = {}
        self.done: list[Fault] = []
        self._log: TextIO = open(cluster.run_dir / "faults.jsonl", "a")
        self._t0 = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.done))

    def _clock(self) -> str:
        return f"[{asyncio.get_running_loop().time() - self._t0:6.1f}s]"

    async def play(self, schedule: Sequence[Planned]) -> None:
        """Each fault at its time (relative to now); returns once every one has healed."""
        self._t0 = asyncio.get_running_loop().time()
        tasks = [
            asyncio.create_task(self._one(_KINDS[p.kind](p, n, self.cluster)))
            for n, p in enumerate(schedule, 1)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, fault: Fault) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._t0 + fault.planned.at - loop.time()))
        fault.start = time.time()
        self.active[fault.id] = fault
        self.say(f"{self._clock()} + {describe(fault.planned)}")
        try:
            await fault.inject()
        except Exception as exc:
            fault.detail["error"] = f"inject failed: {exc}"
            self.say(f"{self._clock()} ! {fault.kind} {fault.target}: {exc}")
        try:
            await asyncio.sleep(max(0.0, self._t0 + fault.planned.end - loop.time()))
        finally:
            await self._heal(fault)

    async def _heal(self, fault: Fault) -> None:
        if self.active.pop(fault.id, None) is None:
            return  # healed by heal_all already
        fault.end = time.time()
        try:
            await fault.heal()
        except Exception as exc:
            fault.detail["heal_error"] = str(exc)
            self.say(f"{self._clock()} ! heal {fault.kind} {fault.target}: {exc}")
        self.done.append(fault)
        self._log.write(json.dumps(fault.record()) + "\n")
        self._log.flush()
        self.say(f"{self._clock()} - {fault.kind} {fault.target} healed")

    async def heal_all(self) -> None:
        """Every active fault healed, then the network reset and every process running."""
        for fault in list(self.active.values()):
            await self._heal(fault)
        await self.cluster.network.heal_all()
        started = await self.cluster.ensure_running()
        if started:
            self.say(f"{self._clock()}   started again: {', '.join(started)}")

    def close(self) -> None:
        self._log.close()


def read_faults(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
