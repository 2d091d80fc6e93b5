"""One reconciliation round of a CollabPool: observe, decide (``ops.scaling_policy``), act, report.

Observed every round, never remembered: the pool's Pods (Kubernetes API) and its workers'
state and load (a router's ``/admin/status``). Remembered only in the resource's ``status``:
the desired count and the drains the operator started. So an operator restarted at any point
reads the status and carries on: a drain it recorded is requested again (idempotent) until the
worker holds nothing, then its Pod is deleted; a rollout goes on from whatever Pods are left.

A drain is two-phase: the round that chooses a victim only records it in ``status.drains``;
the next round, reading that record back, asks the router to drain it. So no worker is ever
draining without a record saying why, whenever the operator stops.

Nothing here deletes a Pod whose worker still holds a session: a drain that times out is
reported (event ``DrainTimedOut``, condition Degraded) and requested again, never cut short.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .client import AdminClient, OpsError
from .collabpool import (
    HASH_LABEL,
    POOL_LABEL,
    PoolSpec,
    SpecError,
    headless_service,
    new_pod_name,
    pod_template,
    service_name,
    template_hash,
    worker_pod,
)
from .draining import sessions_left
from .kube import KubeAPI, KubeError, pods_path, services_path
from .scaling_policy import Autoscaler, Member, Policy, WorkerState, plan

Obj = dict[str, Any]

ROUTER_STATES: dict[str, WorkerState] = {
    "active": "ready",
    "draining": "draining",
    "starting": "starting",
}


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass
class Report:
    """What a round decided: the status to write, Events to post, log lines to print."""

    status: Obj
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(("Warning" if warning else "Normal", reason, message))


class PoolState:
    """What the operator keeps in memory per CollabPool between rounds: only the autoscaler's
    cool-off window (lost on restart, which only delays a scale-down; never a scale-up)."""

    def __init__(self) -> None:
        self.scaler: Autoscaler | None = None

    def autoscaler(self, policy: Policy) -> Autoscaler:
        if self.scaler is None or self.scaler.policy != policy:
            self.scaler = Autoscaler(policy)  # a changed policy starts a new window
        return self.scaler


@dataclass
class Observed:
    alive: dict[str, Obj]  # Pods that run or start (not deleted, not failed)
    terminating: set[str]
    rows: dict[str, Obj] | None  # the routers' rows of this pool's workers; None: unreadable
    read_error: str | None


async def observe(
    kube: KubeAPI, client: AdminClient, namespace: str, pool: str, report: Report
) -> Observed:
    pods = await kube.list(pods_path(namespace), {POOL_LABEL: pool})
    alive: dict[str, Obj] = {}
    terminating: set[str] = set()
    for pod in pods:
        name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase")
        if pod["metadata"].get("deletionTimestamp"):
            terminating.add(name)
        elif phase in ("Failed", "Succeeded"):
            # An evicted or otherwise finished Pod: its worker is gone (its sessions are taken
            # over by the others); delete the object so the count falls and it is replaced.
            why = (pod.get("status") or {}).get("reason") or phase
            report.event("WorkerFailed", f"{name} stopped ({why}); replacing it", warning=True)
            await kube.delete(pods_path(namespace, name))
            terminating.add(name)
        else:
            alive[name] = pod
    try:
        body = await client.status()
    except OpsError as exc:
        return Observed(alive, terminating, None, str(exc))
    rows = {str(r["id"]): r for r in body.get("workers", []) if str(r.get("id")) in alive}
    return Observed(alive, terminating, rows, None)


def member(pod: Obj, row: Obj | None, current_hash: str) -> Member:
    state: WorkerState = "starting"
    if row is not None:
        state = ROUTER_STATES.get(str(row.get("state")), "starting")
    labels = pod["metadata"].get("labels") or {}
    return Member(
        pod["metadata"]["name"],
        state,
        int((row or {}).get("sessions") or 0),
        int((row or {}).get("connections") or 0),
        outdated=labels.get(HASH_LABEL) != current_hash,
    )


async def reconcile(
    pool: Mapping[str, Any],
    kube: KubeAPI,
    client: AdminClient,
    memory: PoolState,
    *,
    now: float | None = None,
) -> Report:
    """One round for ``pool`` (the CollabPool as just read from the API)."""
    now = time.time() if now is None else now
    meta, status = pool["metadata"], dict(pool.get("status") or {})
    name, namespace = meta["name"], meta["namespace"]
    report = Report(status={"observedGeneration": meta.get("generation")})
    try:
        spec = PoolSpec.parse(pool.get("spec") or {})
    except SpecError as exc:
        if _degraded_before(status) != ("InvalidSpec", str(exc)):  # once, not every round
            report.event("InvalidSpec", str(exc), warning=True)
        report.status["conditions"] = conditions(status, now, degraded=("InvalidSpec", str(exc)))
        return report

    await ensure_service(kube, pool, spec, report)
    seen = await observe(kube, client, namespace, name, report)
    current_hash = template_hash(pod_template(pool, spec))
    drains = await progress_drains(
        status.get("drains") or [], seen, spec, kube, client, now, report
    )
    leaving = {d["worker"] for d in drains}
    rows = seen.rows or {}
    members = [
        member(p, rows.get(n), current_hash) for n, p in seen.alive.items() if n not in leaving
    ]
    previous = status.get("desiredWorkers")

    if seen.rows is None:
        # The routers cannot be read: no scaling decision and no drain progress this round
        # (as `collab autoscale` skips a round); only Pods that vanished are replaced, up to
        # the last desired count, which needs no session count.
        desired = int(previous if previous is not None else spec.min_workers)
        desired = min(spec.max_workers, max(spec.min_workers, desired))
        error = f"cannot read the workers from the router: {seen.read_error}"
        if status.get("lastRoundError") != error:  # once per outage, not every round
            report.event("RoundSkipped", error, warning=True)
        report.status["lastRoundError"] = error
        missing = max(0, desired - len(members))
        step_reason = f"router unreadable; replacing {missing} missing worker(s)"
        await create_workers(kube, pool, spec, missing, step_reason, report)
        decision_row = status.get("lastDecision")
        sessions = connections = None
    else:
        sessions = sum(int(r.get("sessions") or 0) for r in rows.values())
        connections = sum(int(r.get("connections") or 0) for r in rows.values())
        current = int(previous) if previous is not None else len(members)
        decision = memory.autoscaler(spec.policy).decide(time.monotonic(), current, sessions)
        desired = min(spec.max_workers, max(spec.min_workers, decision.desired))
        reason = decision.reason
        if desired != decision.desired:
            reason = f"spec bounds [{spec.min_workers}, {spec.max_workers}]: {desired} workers"
        action = decision.action
        if desired != current:
            action = "scale up" if desired > current else "scale down"
            report.event(
                "ScaledUp" if desired > current else "ScaledDown",
                f"desired workers {current} -> {desired}: {reason}",
            )
        decision_row = {"action": action, "reason": reason, "at": iso(now), "sessions": sessions}
        report.status["lastRoundError"] = None
        step = plan(members, desired, len(drains), spec.max_concurrent_drains)
        await create_workers(kube, pool, spec, step.create, step.reason, report)
        for victim in step.drain:
            why = "rollout" if victim.outdated else "scale down"
            drains.append({"worker": victim.name, "reason": why, "since": iso(now), "attempts": 0})
            report.event("DrainChosen", f"{victim.name}: {step.reason}")

    counts = {"starting": 0, "ready": 0, "draining": 0}
    for m in members:
        counts[m.state] += 1
    counts["draining"] += len(drains)
    outdated = sum(1 for m in members if m.outdated) + sum(
        1 for d in drains if d["reason"] == "rollout"
    )
    report.status.update(
        templateHash=current_hash,
        desiredWorkers=desired,
        workers={**counts, "total": len(seen.alive), "outdated": outdated},
        drains=drains,
        lastDecision=decision_row,
    )
    if sessions is not None:
        report.status.update(sessions=sessions, connections=connections)
    report.status["conditions"] = conditions(
        status,
        now,
        ready=counts["ready"] >= min(desired, spec.min_workers) and counts["ready"] > 0,
        progressing=_progress(counts, desired, outdated, drains),
        degraded=_degraded(seen.read_error, drains),
    )
    return report


async def ensure_service(
    kube: KubeAPI, pool: Mapping[str, Any], spec: PoolSpec, report: Report
) -> None:
    namespace, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
    path = services_path(namespace, service_name(name, spec))
    if await kube.get(path) is None:
        await kube.create(services_path(namespace), headless_service(pool, spec))
        report.event("ServiceCreated", f"headless Service {service_name(name, spec)}")


async def create_workers(
    kube: KubeAPI, pool: Mapping[str, Any], spec: PoolSpec, count: int, why: str, report: Report
) -> None:
    namespace, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
    for _ in range(count):
        pod = worker_pod(pool, spec, new_pod_name(name))
        try:
            await kube.create(pods_path(namespace), pod)
        except KubeError as exc:
            report.event("CreateFailed", str(exc), warning=True)
            return
        report.event("WorkerCreated", f"{pod['metadata']['name']}: {why}")


async def progress_drains(
    records: list[Obj],
    seen: Observed,
    spec: PoolSpec,
    kube: KubeAPI,
    client: AdminClient,
    now: float,
    report: Report,
) -> list[Obj]:
    """Carries every recorded drain one step on; the records still open."""
    kept: list[Obj] = []
    for record in records:
        record = dict(record)
        worker = record["worker"]
        if worker not in seen.alive:
            if worker in seen.terminating:
                kept.append(record)  # deleted, its Pod still stopping: not capacity any more
            else:
                report.event("WorkerRemoved", f"{worker} drained and removed ({record['reason']})")
            continue
        kept.append(record)
        if seen.rows is None:
            continue  # no router: nothing can be asked or checked this round
        row = seen.rows.get(worker)
        namespace = seen.alive[worker]["metadata"]["namespace"]
        if row is None or row.get("state") == "down":
            phase = (seen.alive[worker].get("status") or {}).get("phase")
            if phase != "Running":
                # Kubernetes says nothing runs there (still pending, never started): there is
                # nothing to drain.
                await kube.delete(pods_path(namespace, worker))
                report.event("WorkerDeleted", f"{worker} never ran; deleted its Pod")
            elif now - parse_iso(record["since"]) >= spec.drain_timeout_s:
                # Running, but no router reaches it (restarting, a partition): it may hold
                # sessions, so it is not deleted; the drain is asked for again once it answers.
                record["attempts"] = int(record.get("attempts", 0)) + 1
                record["since"] = iso(now)
                record["lastError"] = f"{worker} is running but no router reaches it"
                report.event("DrainTimedOut", record["lastError"], warning=True)
            continue
        if row.get("state") != "draining":
            try:
                await client.drain(worker)
            except OpsError as exc:
                record["lastError"] = str(exc)
                report.event("DrainFailed", f"{worker}: {exc}; retrying", warning=True)
                continue
            record["requested"] = True
            report.event(
                "Draining", f"{worker} ({row.get('sessions') or 0} sessions): {record['reason']}"
            )
            continue
        drain = (row.get("status") or {}).get("drain") or {}
        left = sessions_left(row)
        if not left and not drain.get("inProgress", False) and int(row.get("sessions") or 0) == 0:
            await kube.delete(pods_path(namespace, worker))
            report.event("WorkerDrained", f"{worker} holds no session; deleting its Pod")
            continue
        elapsed = now - parse_iso(record["since"])
        if elapsed >= spec.drain_timeout_s:
            record["attempts"] = int(record.get("attempts", 0)) + 1
            record["since"] = iso(now)
            record["lastError"] = (
                f"{len(left)} session(s) still on {worker} after {elapsed:.0f} s: "
                f"{', '.join(left[:5])}"
            )
            report.event(
                "DrainTimedOut",
                f"{record['lastError']} (attempt {record['attempts']}); asking again, its Pod "
                "stays until it holds nothing (check storage: `collab status`)",
                warning=True,
            )
            try:
                await client.drain(worker)
            except OpsError as exc:
                record["lastError"] = str(exc)
    return kept


def _progress(
    counts: dict[str, int], desired: int, outdated: int, drains: list[Obj]
) -> tuple[str, str] | None:
    if outdated:
        return "RollingOut", f"{outdated} worker(s) on an outdated template"
    if drains:
        return "Draining", ", ".join(d["worker"] for d in drains)
    if counts["starting"] or counts["ready"] < desired:
        return "ScalingUp", f"{counts['ready']} of {desired} workers ready"
    return None


def _degraded_before(status: Mapping[str, Any]) -> tuple[str, str] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return str(condition.get("reason")), str(condition.get("message"))
    return None


def _degraded(read_error: str | None, drains: list[Obj]) -> tuple[str, str] | None:
    if read_error:
        return "RouterUnreachable", read_error
    failing = [d for d in drains if d.get("lastError")]
    if failing:
        return "DrainFailing", "; ".join(f"{d['worker']}: {d['lastError']}" for d in failing)
    return None


def conditions(
    status: Mapping[str, Any],
    now: float,
    *,
    ready: bool = False,
    progressing: tuple[str, str] | None = None,
    degraded: tuple[str, str] | None = None,
) -> list[Obj]:
    """Ready, Progressing, Degraded; a condition keeps its transition time until it flips."""
    before = {c["type"]: c for c in status.get("conditions") or []}
    wanted = [
        (
            "Ready",
            ready,
            ("WorkersReady", "enough workers ready")
            if ready
            else ("WorkersNotReady", "fewer ready workers than needed"),
        ),
        ("Progressing", progressing is not None, progressing or ("Stable", "nothing to do")),
        ("Degraded", degraded is not None, degraded or ("Healthy", "no failures")),
    ]
    out = []
    for kind, on, (reason, message) in wanted:
        value = "True" if on else "False"
        old = before.get(kind)
        since = old["lastTransitionTime"] if old and old.get("status") == value else iso(now)
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            }
        )
    return out
