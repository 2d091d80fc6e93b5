"""The fault schedule: a random plan drawn from the seed alone (pure; no I/O, no clock).

Rules (``plan`` keeps them; tests/chaos/test_schedule.py checks them over many seeds):

- the first fault starts within 3 s and each next one 1.5-6 s after the previous start, so no
  10 s pass without a new fault;
- the first seven faults are the seven kinds in a random order (a 60 s run has every kind),
  the rest are drawn at random;
- faults overlap (several are active at once) but never on the same thing: one fault per
  process, per path, per host's delay and per host's loss, one storage restart at a time;
- each lasts a random, bounded time (``DURATIONS``) and ends at least 0.5 s before the run does;
  the orchestrator then heals everything anyway.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .topology import HOSTS, PROCESSES, STORAGE, WORKERS, path_name

KINDS = ("partition", "partition_oneway", "delay", "loss", "kill", "stop", "storage_restart")
# Seconds each kind lasts: from inject to heal (for "kill", how long the process stays dead).
DURATIONS = {
    "partition": (2.0, 10.0),
    "partition_oneway": (2.0, 10.0),
    "delay": (3.0, 10.0),
    "loss": (3.0, 10.0),
    "kill": (0.5, 5.0),
    "stop": (1.0, 8.0),
    "storage_restart": (1.0, 5.0),
}
FIRST_WITHIN = 3.0
GAP = (1.5, 6.0)
END_MARGIN = 0.5


@dataclass(frozen=True)
class Planned:
    at: float  # seconds after the run's start
    duration: float
    kind: str
    hosts: tuple[str, ...]  # the path (a, b), the host, the process, or ("storage",)
    params: dict[str, float] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def target(self) -> str:
        if self.kind in ("partition", "partition_oneway"):
            a, b = self.hosts
            return path_name(a, b, oneway=self.kind == "partition_oneway")
        return self.hosts[0]

    @property
    def resource(self) -> str:
        """What two overlapping faults must not share."""
        if self.kind in ("partition", "partition_oneway"):
            return "path:" + "|".join(sorted(self.hosts))
        if self.kind in ("kill", "stop"):
            return "process:" + self.hosts[0]
        return f"{self.kind}:{self.hosts[0]}"


def plan(seed: int, duration: float, paths: Sequence[tuple[str, str]]) -> list[Planned]:
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    faults: list[Planned] = []
    at = rng.uniform(0.5, FIRST_WITHIN)
    while at + DURATIONS["kill"][0] <= duration - END_MARGIN:
        wanted = kinds.pop(0) if kinds else rng.choice(KINDS)
        active = {f.resource for f in faults if f.at <= at < f.end}
        fault = None
        # The wanted kind first; if everything it could hit is busy, any other kind.
        for kind in [wanted, *rng.sample(KINDS, len(KINDS))]:
            fault = _draw(rng, kind, at, duration, paths, active)
            if fault is not None:
                break
        if fault is not None:
            faults.append(fault)
            if fault.kind != wanted and wanted not in {f.kind for f in faults}:
                kinds.insert(0, wanted)  # still owed: try it at the next slot
        at += rng.uniform(*GAP)
    return faults


def _draw(
    rng: random.Random,
    kind: str,
    at: float,
    duration: float,
    paths: Sequence[tuple[str, str]],
    active: set[str],
) -> Planned | None:
    low, high = DURATIONS[kind]
    length = min(rng.uniform(low, high), duration - END_MARGIN - at)
    if length < low:
        return None
    params: dict[str, float] = {}
    candidates: list[tuple[str, ...]]
    if kind in ("partition", "partition_oneway"):
        candidates = [tuple(p) for p in paths]
    elif kind in ("delay", "loss"):
        candidates = [(h,) for h in HOSTS]
    elif kind in ("kill", "stop"):
        # Workers hold the sessions: they are hit twice as often as routers.
        candidates = [(p,) for p in (*PROCESSES, *WORKERS)]
    else:
        candidates = [(STORAGE,)]
    free = [c for c in candidates if Planned(at, length, kind, c).resource not in active]
    if not free:
        return None
    hosts = rng.choice(free)
    if kind == "partition_oneway" and rng.random() < 0.5:
        hosts = (hosts[1], hosts[0])
    if kind == "delay":
        params["delay_ms"] = round(rng.uniform(50, 300))
        params["jitter_ms"] = round(params["delay_ms"] * rng.uniform(0, 0.3))
    elif kind == "loss":
        params["loss"] = round(rng.uniform(0.02, 0.10), 3)
    return Planned(round(at, 3), round(length, 3), kind, hosts, params)


def describe(fault: Planned) -> str:
    """One line for the progress output: ``partition r0<->w1 for 4.2s``."""
    extra = ""
    if fault.kind == "delay":
        extra = f" ({fault.params['delay_ms']:.0f}±{fault.params['jitter_ms']:.0f} ms)"
    elif fault.kind == "loss":
        extra = f" ({fault.params['loss']:.1%})"
    return f"{fault.kind} {fault.target}{extra} for {fault.duration:.1f}s"
