"""The one decision engine of `collab autoscale` (Swarm) and `collab operator` (Kubernetes).

Pure functions and one small stateful object, no I/O, so both platforms behave the same and are
tested once (tests/ops/test_scaling.py):

* ``Policy.need``: workers for the live sessions plus a spare ``Buffer``, within [min, max];
* ``Autoscaler.decide``: HPA's rule with a scale-down stabilization window;
* ``victims``: which workers go when the pool shrinks (outdated first, then the least loaded);
* ``plan``: one step of converging a pool of workers on a desired count, rolling an outdated
  template one drained worker at a time (Kubernetes only: Swarm replaces tasks itself).

The decision is

    need    = ceil((sessions + buffer sessions) / target) + buffer workers, within [min, max]

Scale up at once. Scale down only after a full cool-off window has been observed, and only to
the highest count wanted during it, so a brief lull does not remove workers that are needed
again a minute later (HPA's scale-down stabilization window). A restarted autoscaler has seen
no window yet, so it never scales down before it has watched one whole: restarts are safe.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

BufferUnit = Literal["sessions", "workers"]


@dataclass(frozen=True)
class Buffer:
    """Spare capacity kept above the live sessions: ``amount`` sessions or workers, or
    ``amount`` percent of the live sessions / of the workers they need."""

    amount: int = 0
    percent: bool = False
    unit: BufferUnit = "sessions"

    @classmethod
    def parse(cls, value: int | str, unit: BufferUnit) -> Buffer:
        """``5`` or ``"5"`` (absolute) or ``"20%"``; raises ValueError on anything else."""
        text = str(value).strip()
        match = re.fullmatch(r"([0-9]+)(%?)", text)
        if match is None:
            raise ValueError(f"buffer {unit} must be a whole number or a percentage, not {text!r}")
        return cls(int(match.group(1)), bool(match.group(2)), unit)

    def extra(self, base: int) -> int:
        """What the buffer adds to ``base`` (live sessions, or workers they need)."""
        return math.ceil(base * self.amount / 100) if self.percent else self.amount

    def __str__(self) -> str:
        return f"{self.amount}{'%' if self.percent else ''} {self.unit}"


NO_BUFFER = Buffer()


@dataclass(frozen=True)
class Policy:
    target: int  # sessions one worker should hold
    minimum: int
    maximum: int
    scale_down_delay_s: float
    buffer: Buffer = NO_BUFFER

    def need(self, sessions: int) -> int:
        """Workers for ``sessions`` plus the buffer, within [minimum, maximum]."""
        buffer = self.buffer
        if buffer.unit == "sessions":
            wanted = math.ceil((sessions + buffer.extra(sessions)) / self.target)
        else:
            base = math.ceil(sessions / self.target)
            wanted = base + buffer.extra(base)
        return min(self.maximum, max(self.minimum, wanted))

    def explain(self, sessions: int) -> str:
        """The first half of every decision's reason: what the count is computed from."""
        if not self.buffer.amount:
            return f"{sessions} sessions / {self.target} per worker"
        return f"{sessions} sessions + buffer {self.buffer} / {self.target} per worker"


@dataclass(frozen=True)
class Decision:
    at: float
    sessions: int
    current: int
    desired: int
    action: str  # "scale up" | "scale down" | "hold"
    reason: str

    def row(self) -> dict[str, Any]:
        """The decision without its clock reading (``at`` is monotonic time)."""
        row = asdict(self)
        del row["at"]
        return row


class Autoscaler:
    """Decisions over (time, current desired count, total sessions); no I/O.

    ``current`` is the count the platform is converging on (Swarm's replicas, a CollabPool's
    ``status.desiredWorkers``), not the workers up at this instant: a rollout's extra worker or
    a worker still starting must not look like a reason to scale.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._needs: deque[tuple[float, int]] = deque()
        self._first: float | None = None

    def decide(self, now: float, current: int, sessions: int) -> Decision:
        policy = self.policy
        need = policy.need(sessions)
        window = policy.scale_down_delay_s
        self._first = now if self._first is None else self._first
        self._needs.append((now, need))
        while self._needs and self._needs[0][0] < now - window:
            self._needs.popleft()
        per = policy.explain(sessions)

        def decision(action: str, desired: int, reason: str) -> Decision:
            return Decision(now, sessions, current, desired, action, reason)

        if need > current:
            return decision("scale up", need, f"{per} needs {need}")
        if need == current:
            return decision("hold", current, f"{per}: {need} is right")
        observed = now - self._first
        if observed < window:
            return decision(
                "hold",
                current,
                f"{per} needs {need} [{policy.minimum}, {policy.maximum}], but the {window:g} s "
                f"cool-off has run {observed:.0f} s only",
            )
        peak = max(n for _, n in self._needs)
        last = f"in the last {window:g} s"
        if peak >= current:
            return decision("hold", current, f"{per} needs {need}, but {peak} were needed {last}")
        return decision("scale down", peak, f"{per} needs {need}; at most {peak} needed {last}")


# -- which workers, and the next step --------------------------------------------------------

WorkerState = Literal["starting", "ready", "draining"]


@dataclass(frozen=True)
class Member:
    """One worker as both platforms see it: its state on the routers, its load, and whether it
    runs an outdated template (Kubernetes rollouts; always False on Swarm)."""

    name: str
    state: WorkerState
    sessions: int = 0
    connections: int = 0
    outdated: bool = False


def victims(members: Sequence[Member], count: int) -> list[Member]:
    """The ``count`` workers to remove: outdated ones first (removing them is progress on a
    rollout too), then the fewest sessions, then the fewest connections (fewest clients sent
    away), then by name so that every round and every platform picks the same. Workers already
    draining are not candidates: they are leaving anyway."""
    candidates = [m for m in members if m.state != "draining"]
    candidates.sort(key=lambda m: (not m.outdated, m.sessions, m.connections, m.name))
    return candidates[: max(0, count)]


@dataclass(frozen=True)
class Step:
    """What to do now: start ``create`` new workers and begin draining ``drain``."""

    create: int
    drain: tuple[Member, ...]
    reason: str
    phase: Literal["stable", "scaling up", "scaling down", "rolling out", "waiting"]


def plan(members: Sequence[Member], desired: int, draining: int, max_drains: int = 1) -> Step:
    """One convergence step for ``members`` (the workers that stay unless chosen: not those
    already being removed, of which there are ``draining``) towards ``desired`` workers.

    Too few: start the missing ones. Too many: drain the victims, at most ``max_drains`` at once
    overall. Right count but outdated workers left: a rollout, one worker at a time: start one
    new worker (one over ``desired``), wait until it is ready, then drain one outdated worker
    (the "too many" rule picks it), and only then the next. No outdated worker is drained while
    a new one is still starting, so capacity never dips below ``desired`` ready workers because
    of a rollout.
    """
    count = len(members)
    outdated = [m for m in members if m.outdated]
    starting = [m for m in members if m.state == "starting"]
    if count < desired:
        missing = desired - count
        return Step(missing, (), f"{count} of {desired} workers: starting {missing}", "scaling up")
    if count > desired:
        if outdated and any(not m.outdated for m in starting):
            return Step(
                0, (), f"rollout: waiting for {len(starting)} new worker(s) to be ready", "waiting"
            )
        room = max(0, max_drains - draining)
        chosen = tuple(victims(members, min(count - desired, room)))
        if not chosen:
            return Step(0, (), f"{count} workers for {desired}: waiting for a drain", "waiting")
        phase: Literal["rolling out", "scaling down"] = (
            "rolling out" if all(m.outdated for m in chosen) and outdated else "scaling down"
        )
        names = ", ".join(f"{m.name} ({m.sessions} sessions)" for m in chosen)
        why = "outdated" if phase == "rolling out" else "least loaded"
        return Step(0, chosen, f"{count} workers for {desired}: draining {names}, {why}", phase)
    if outdated:
        if draining or starting:
            return Step(
                0, (), f"rollout: {len(outdated)} outdated, waiting for the last step", "waiting"
            )
        return Step(1, (), f"rollout: {len(outdated)} outdated, starting 1 new", "rolling out")
    return Step(0, (), f"{count} workers, as desired", "stable")
