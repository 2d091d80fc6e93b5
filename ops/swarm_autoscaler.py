"""`collab autoscale`: the worker count from live sessions, and applying it on Docker Swarm.

Swarm has no autoscaler; on Kubernetes `collab operator` scales a CollabPool. Both decide with
``ops.scaling_policy`` (the rule, the cool-off window, the buffer and the choice of victims),
so both platforms behave the same.

On Swarm, scaling down removes tasks that Swarm picks (it prefers nodes with the most
replicas), not ones we name. So the workers the autoscaler would remove (the ones holding the
fewest sessions) are drained first, the service is scaled, and once Swarm has settled any drained
worker that Swarm kept is undrained. Nothing is lost either way: a worker Swarm stops drains on
SIGTERM within its stop_grace_period.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

import anyio

from .client import AdminClient, OpsError
from .display import emit
from .draining import wait_drained
from .scaling_policy import Autoscaler, Decision, Member, Policy, WorkerState, victims

__all__ = ["Autoscaler", "Decision", "Loop", "Policy", "Swarm", "members_of"]


def members_of(rows: list[dict[str, Any]]) -> list[Member]:
    """The routers' worker rows as the decision engine's members (down workers hold nothing)."""
    states: dict[str, WorkerState] = {
        "active": "ready",
        "draining": "draining",
        "starting": "starting",
    }
    return [
        Member(
            str(row["id"]),
            states[row["state"]],
            int(row.get("sessions") or 0),
            int(row.get("connections") or 0),
        )
        for row in rows
        if row.get("state") in states
    ]


class Swarm:
    """Applies a decision to a Swarm service with the ``docker`` CLI, draining removed workers."""

    def __init__(
        self, service: str, client: AdminClient, drain_timeout: float, settle_timeout: float
    ) -> None:
        self.service = service
        self.client = client
        self.drain_timeout = drain_timeout
        self.settle_timeout = settle_timeout

    async def docker(self, *args: str) -> str:
        if shutil.which("docker") is None:
            raise OpsError("no `docker` on PATH: --swarm-service needs the Docker CLI", 2)
        done = await anyio.run_process(["docker", *args], check=False)
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise OpsError(f"`docker {' '.join(args)}` failed: {error}")
        return done.stdout.decode(errors="replace").strip()

    async def replicas(self) -> int:
        out = await self.docker(
            "service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", self.service
        )
        try:
            return int(out)
        except ValueError:
            raise OpsError(
                f"service {self.service} is not a replicated service (docker said {out!r})"
            ) from None

    async def scale(self, workers: list[dict[str, Any]], current: int, desired: int) -> str:
        """Scales the service; on the way down, drains the workers to be removed first."""
        if desired >= current:
            await self.docker("service", "scale", "--detach", f"{self.service}={desired}")
            return f"scaled {self.service} to {desired}"
        active = [m for m in members_of(workers) if m.state == "ready"]
        chosen = [m.name for m in victims(active, current - desired)]
        for name in chosen:
            await self.client.drain(name)
        for name in chosen:
            await wait_drained(self.client, name, self.drain_timeout)
        await self.docker("service", "scale", "--detach", f"{self.service}={desired}")
        kept = await self._settle(desired, chosen)
        for name in kept:
            await self.client.undrain(name)
        note = f"; undrained {', '.join(kept)} (Swarm stopped others)" if kept else ""
        return f"drained {', '.join(chosen) or 'none'}, scaled {self.service} to {desired}{note}"

    async def _settle(self, desired: int, drained: list[str]) -> list[str]:
        """Waits for the pool to shrink to ``desired``; the drained workers still running."""
        deadline = time.monotonic() + self.settle_timeout
        while True:
            workers = await self.client.workers()
            alive = [w for w in workers if w.get("state") != "down"]
            if len(alive) <= desired or time.monotonic() >= deadline:
                return [str(w["id"]) for w in alive if w.get("id") in drained]
            await anyio.sleep(1.0)


class Loop:
    """Reads the workers' metrics through the router, decides, prints, and applies."""

    def __init__(
        self, policy: Policy, client: AdminClient, swarm: Swarm | None, *, dry_run: bool
    ) -> None:
        self.scaler = Autoscaler(policy)
        self.client = client
        self.swarm = swarm
        self.dry_run = dry_run

    async def observe(self) -> tuple[int, int, list[dict[str, Any]]]:
        """(total sessions, current replicas, workers) from live metrics and membership."""
        metrics = await self.client.metrics()
        failed = {name: m["error"] for name, m in metrics.items() if "error" in m}
        if failed:
            detail = ", ".join(f"{n}: {e}" for n, e in sorted(failed.items()))
            raise OpsError(f"could not read the metrics of every worker ({detail}); not deciding")
        sessions = sum(int(m["metrics"].get("collab_sessions_active", 0)) for m in metrics.values())
        workers = await self.client.workers()
        if self.swarm is not None:
            current = await self.swarm.replicas()
        else:
            current = sum(1 for w in workers if w.get("state") != "down")
        return sessions, current, workers

    async def run(self, interval: float, rounds: int, *, as_json: bool) -> int:
        """Decides every ``interval`` seconds, ``rounds`` times (0: until stopped).

        A round that cannot read the pool (router restarting, a worker not answering) or
        cannot apply its decision is reported and skipped; the next round tries again. The
        exit code is 1 when the last round failed.
        """
        columns = [(k, k.upper()) for k in ("at", "sessions", "current", "desired", "action")]
        columns.append(("reason", "REASON"))
        done, printed, failed = 0, False, False
        while True:
            try:
                row = await self.round()
                failed = False
            except OpsError as exc:
                if exc.exit_code == 2:
                    raise
                failed = True
                again = f"; next round in {interval:g} s" if not rounds or done + 1 < rounds else ""
                sys.stderr.write(f"collab autoscale: round skipped: {exc}{again}\n")
                sys.stderr.flush()
            else:
                emit([row], columns, as_json=as_json, header=not printed)
                printed = True
                if row["applied"] is not None and not as_json:
                    sys.stdout.write(f"  -> {row['applied']}\n")
                    sys.stdout.flush()
            done += 1
            if rounds and done >= rounds:
                return 1 if failed else 0
            await anyio.sleep(interval)

    async def round(self) -> dict[str, Any]:
        """One decision, applied unless holding, dry-running or without a Swarm service."""
        sessions, current, workers = await self.observe()
        decision = self.scaler.decide(time.monotonic(), current, sessions)
        applied = None
        if decision.action != "hold":
            if self.swarm is None or self.dry_run:
                why = "dry run" if self.dry_run else "no --swarm-service"
                applied = f"not applied ({why})"
            else:
                applied = await self.swarm.scale(workers, current, decision.desired)
        return {"at": time.strftime("%H:%M:%S"), **decision.row(), "applied": applied}
