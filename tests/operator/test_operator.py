"""`collab operator` end to end: the real operator process (kopf) against an emulated Kubernetes
API server (kmock), a stand-in kubelet running each worker Pod as a real `collab worker`
process, a real router finding them through the worker Service, S3 (SeaweedFS), and live clients
(an unmodified y-websocket provider in Node, JSON-protocol editors) editing throughout:

scale-up on sessions + buffer, scale-down of the least-loaded worker (drained, then deleted),
an evicted worker replaced, a rolling image change one drained worker at a time (the operator
killed half-way), and the operator killed mid-drain and started again. At the end every
acknowledged edit is there and every client has reconnected at least once. Then: a router
that cannot be read (the round is skipped and reported), and a drain that cannot finish
because storage is down (reported, retried, the Pod kept until it holds nothing).
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets

from ops.collabpool import HASH_LABEL
from ops.kube_operator import RBAC_RULES
from ops.scaling_policy import victims
from ops.swarm_autoscaler import members_of
from tests.jsclient import js_client, requires_node
from tests.operator.harness import TOKEN, Cluster, cluster
from tests.pool import sessions_owned_by
from tests.s3server import S3Server, start_s3_server
from tests.support import JsonClient, wait_until

Obj = dict[str, Any]


class Editor:
    """A JSON-protocol client that keeps creating files and reconnects when sent away."""

    def __init__(self, url: str, session: str, user: str) -> None:
        self.url, self.session, self.user = url, session, user
        self.acked: list[str] = []
        self.connects = 0

    async def run(self, stop: anyio.Event) -> None:
        n = 0
        while not stop.is_set():
            try:
                async with JsonClient.connect(self.url) as client:
                    await client.join(self.session, self.user)
                    self.connects += 1
                    while not stop.is_set():
                        path = f"{self.user}/{n}.txt"
                        reply = await client.file_op(type="create", path=path, content=f"{n}")
                        if reply["type"] == "fileOperationSuccess":
                            self.acked.append(path)
                            n += 1
                        await anyio.sleep(0.3)
            except (websockets.ConnectionClosed, OSError, TimeoutError):
                await anyio.sleep(0.2)

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)


async def rows(c: Cluster) -> list[Obj]:
    """The workers as the operator reads them (each worker's own fresh status, via the router),
    once the load has settled: every session live somewhere, the same in two reads."""
    before: list[tuple[str, int]] = []
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            r = await http.get(
                f"{c.router_http}/admin/status", headers={"authorization": f"Bearer {TOKEN}"}
            )
            workers: list[Obj] = r.json()["workers"]
            loads = sorted((w["id"], int(w.get("sessions") or 0)) for w in workers)
            if loads == before and sum(n for _, n in loads) == 6:
                return workers
            assert time.monotonic() < deadline, f"the load did not settle: {loads}"
            before = loads
            await anyio.sleep(0.5)


def covered(verb: str, resource: str) -> bool:
    group, _, plural = resource.partition("/")
    return any(
        group in rule["apiGroups"] and plural in rule["resources"] and verb in rule["verbs"]
        for rule in RBAC_RULES
    )


@pytest.mark.slow
@pytest.mark.node
@requires_node
@pytest.mark.timeout(400)
async def test_the_operator_scales_drains_rolls_and_resumes_with_live_clients(
    tmp_path: Path, s3_server: S3Server
) -> None:
    started = time.monotonic()
    async with cluster(
        tmp_path,
        s3_server,
        f"op-{uuid.uuid4().hex[:12]}",
        minWorkers=2,
        maxWorkers=4,
        sessionsPerWorker=3,
        buffer={"sessions": 1},
        scaleDownDelaySeconds=2,
        drainTimeoutSeconds=30,
    ) as c:
        status = await c.wait_status(lambda s: s.get("workers", {}).get("ready") == 2, 60, "2")
        assert status["desiredWorkers"] == 2 and status["observedGeneration"] == 1
        first = set(await c.pods())
        stop = anyio.Event()
        editors = [Editor(c.router_ws, f"s-{i}", f"u{i}") for i in range(5)]
        js_cm = js_client(f"{c.router_ws}/yjs", "live-doc/notes.txt", timeout_ms=20_000)
        async with js_cm as js, anyio.create_task_group() as tg:
            for editor in editors:
                tg.start_soon(editor.run, stop)
            inserted: list[str] = []

            async def type_along() -> None:
                while not stop.is_set():
                    marker = f"[{len(inserted)}]"
                    await js.insert(marker)
                    inserted.append(marker)
                    await anyio.sleep(0.5)

            tg.start_soon(type_along)

            # -- scale-up: 6 sessions + a buffer of 1 over 3 per worker needs 3 workers.
            status = await c.wait_status(
                lambda s: s.get("desiredWorkers") == 3 and s["workers"]["ready"] == 3, 60, "3"
            )
            await c.wait_event(
                "ScaledUp: desired workers 2 -> 3: 6 sessions + buffer 1 sessions / 3 per worker "
                "needs 3"
            )

            # -- scale-down: 3 per worker -> 10 per worker needs 1, within [2, 4]: 2. The
            # victim is the least loaded worker, by the engine's rule on the live numbers.
            live = [r for r in await rows(c) if r["state"] == "active"]
            [expected] = victims(members_of(live), 1)
            before = set(await c.pods())
            await c.patch_spec(sessionsPerWorker=10)
            await c.wait_status(
                lambda s: s["workers"]["total"] == 2 and not s["drains"], 60, "scaled down"
            )
            gone = before - set(await c.pods())
            assert gone == {expected.name}, (gone, expected, live)
            assert expected.name in c.kubelet.stopped
            await c.wait_event(f"DrainChosen: {expected.name}")
            await c.wait_event(f"WorkerDrained: {expected.name}")

            # -- an evicted worker (killed, Pod Failed) is deleted and replaced.
            victim = sorted(await c.pods())[0]
            await c.kubelet.evict(victim)
            deadline = time.monotonic() + 60
            while victim in await c.pods() or (await c.status())["workers"]["ready"] != 2:
                assert time.monotonic() < deadline, "the evicted worker was not replaced"
                await anyio.sleep(0.2)
            await c.wait_event(f"WorkerFailed: {victim}")

            # -- rolling image change: one new worker at a time, each old one drained first.
            c.kubelet.max_running = 0
            old = set(await c.pods())
            await c.patch_spec(image="collab:2")
            most_drains = 0
            restarted = False
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = await c.status()
                most_drains = max(most_drains, len(status.get("drains") or []))
                pods = await c.pods()
                if not restarted and len(old & set(pods)) == 1:
                    # Half-way through the rollout: the operator is killed and started again.
                    c.kill_operator()
                    c.start_operator()
                    restarted = True
                hashes = {p["metadata"]["labels"][HASH_LABEL] for p in pods.values()}
                if (
                    not old & set(pods)
                    and hashes == {status["templateHash"]}
                    and status["workers"]["ready"] == 2
                    and not status["drains"]
                ):
                    break
                await anyio.sleep(0.2)
            else:
                raise TimeoutError(f"rollout did not finish: {status}")
            assert most_drains == 1 and restarted
            assert c.kubelet.max_running <= 3  # desired 2, plus the one new worker at a time
            assert status["observedGeneration"] == (await c.pool())["metadata"]["generation"]

            # -- the operator killed mid-drain; a new one finishes that drain, and only it.
            await c.patch_spec(minWorkers=1, sessionsPerWorker=100)
            status = await c.wait_status(lambda s: bool(s.get("drains")), 60, "a drain")
            [draining] = [d["worker"] for d in status["drains"]]
            c.kill_operator()
            before = set(await c.pods())
            c.start_operator()
            status = await c.wait_status(
                lambda s: s["workers"]["total"] == 1 and not s["drains"], 60, "resumed"
            )
            assert before - set(await c.pods()) == {draining}
            assert status["desiredWorkers"] == 1

            # -- clients: let the editors run a little on the last worker, then stop them.
            await anyio.sleep(1.5)
            stop.set()
        # Every y-websocket edit is in the document (re-sent on reconnect), every client was
        # sent away at least once (the rollout replaced every worker), nothing acknowledged
        # is missing.
        async with js_client(f"{c.router_ws}/yjs", "live-doc/notes.txt") as reader:
            state = await reader.wait(expect_contains=inserted, timeout_ms=20_000)
        assert all(m in state["text"] for m in inserted) and len(inserted) >= 20
        assert js.reconnects >= 1
        for editor in editors:
            assert editor.reconnects >= 1, editor.user
            assert len(editor.acked) >= 10, editor.user
            async with JsonClient.connect(c.router_ws) as check:
                await check.join(editor.session, "checker")
                files = set(await check.get_files())
            assert set(editor.acked) <= files, set(editor.acked) - files

        # -- RBAC: every call the operator made is in its Role.
        operator_calls = {(v, r) for v, r, agent in c.server.calls if agent != "test"}
        assert all(covered(v, r) for v, r in operator_calls), operator_calls
        granted = {
            (verb, f"{group}/{resource}")
            for rule in RBAC_RULES
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        assert operator_calls == granted  # and nothing granted goes unused
        assert first.isdisjoint(await c.pods())
    assert time.monotonic() - started < 360


@pytest.mark.slow
async def test_a_round_that_cannot_read_the_router_is_skipped_and_reported(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """No router answers at spec.routerUrl: no scaling decision, a RoundSkipped Event and a
    Degraded condition; the Pods the last desired count needs are still made."""
    # A port bound here and never listened on refuses connections, and no worker of the
    # cluster can be given it (a port merely found free was, once: it answered 404).
    with socket.socket() as hold:
        hold.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{hold.getsockname()[1]}"
        async with cluster(
            tmp_path, s3_server, f"op-{uuid.uuid4().hex[:12]}", minWorkers=2, routerUrl=closed
        ) as c:
            status = await c.wait_status(lambda s: bool(s.get("lastRoundError")), 30, "an error")
            assert f"cannot reach the router at {closed}" in status["lastRoundError"]
            degraded = {x["type"]: x for x in status["conditions"]}["Degraded"]
            assert (degraded["status"], degraded["reason"]) == ("True", "RouterUnreachable")
            assert status.get("lastDecision") is None and status["desiredWorkers"] == 2
            await c.wait_event("RoundSkipped: cannot read")
            deadline = time.monotonic() + 30
            while len(await c.pods()) < 2:
                assert time.monotonic() < deadline, "no Pods were made"
                await anyio.sleep(0.2)
            await anyio.sleep(1.5)  # a few more rounds: still exactly the minimum, nothing drained
            assert len(await c.pods()) == 2 and not (await c.status())["drains"]
            # The operator itself is alive (the Deployment's liveness probe asks this endpoint).
            async with httpx.AsyncClient() as http:
                with anyio.fail_after(20):
                    while True:
                        try:
                            if (await http.get(c.liveness, timeout=5)).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        await anyio.sleep(0.2)


async def test_an_invalid_spec_is_reported_once_and_nothing_is_made(
    tmp_path: Path, s3_server: S3Server
) -> None:
    async with cluster(
        tmp_path, s3_server, f"op-{uuid.uuid4().hex[:12]}", minWorkers=3, maxWorkers=2
    ) as c:
        status = await c.wait_status(lambda s: bool(s.get("conditions")), 30, "conditions")
        degraded = {x["type"]: x for x in status["conditions"]}["Degraded"]
        assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
        assert degraded["message"] == "spec.minWorkers (3) is above spec.maxWorkers (2)"
        await c.wait_event("InvalidSpec: spec.minWorkers (3) is above")
        await anyio.sleep(1.5)  # more rounds: the same Event is not posted again
        assert [r for r in await c.reasons() if r.startswith("InvalidSpec")] == [
            "InvalidSpec: spec.minWorkers (3) is above spec.maxWorkers (2)"
        ]
        assert await c.pods() == {}


@pytest.mark.slow
async def test_a_drain_that_cannot_finish_is_reported_retried_and_never_cut(
    tmp_path: Path,
) -> None:
    """Storage goes down while a worker is to be removed: its sessions cannot be made durable,
    so the drain does not finish. The operator reports it (Event DrainTimedOut, condition
    Degraded DrainFailing, the drain's attempts and last error in status), asks again, and keeps
    the Pod. Once storage is back the drain finishes and only then the Pod is deleted; every
    acknowledged edit is there."""
    with start_s3_server() as s3:
        async with cluster(
            tmp_path,
            s3,
            f"op-{uuid.uuid4().hex[:12]}",
            minWorkers=2,
            maxWorkers=2,
            scaleDownDelaySeconds=1,
            drainTimeoutSeconds=2,
        ) as c:
            await c.wait_status(lambda s: s.get("workers", {}).get("ready") == 2, 60, "2")
            names = sorted(await c.pods())
            # One editor on each worker, so whichever is removed holds a session.
            sessions = [sessions_owned_by(name, names, 1, "d")[0] for name in names]
            stop = anyio.Event()
            editors = [Editor(c.router_ws, s, f"d{i}") for i, s in enumerate(sessions)]
            async with anyio.create_task_group() as tg:
                for editor in editors:
                    tg.start_soon(editor.run, stop)
                await wait_until(lambda: min(len(e.acked) for e in editors) >= 2, 30, "edits")
                await s3.astop()
                await c.patch_spec(minWorkers=1)
                status = await c.wait_status(
                    lambda s: any(d.get("attempts") for d in s.get("drains") or []), 60, "retry"
                )
                [drain] = status["drains"]
                victim = drain["worker"]
                assert "session(s) still on" in drain["lastError"]
                degraded = {x["type"]: x for x in status["conditions"]}["Degraded"]
                assert (degraded["status"], degraded["reason"]) == ("True", "DrainFailing")
                await c.wait_event("DrainTimedOut: ")
                assert victim in await c.pods()  # never deleted with sessions on it
                # S3 comes back with what it stored before the outage: every acknowledged edit,
                # from the first one on, must be there at the end.
                await s3.astart()
                await c.wait_status(
                    lambda s: s["workers"]["total"] == 1 and not s["drains"], 60, "drained"
                )
                assert victim not in await c.pods()
                await c.wait_event(f"WorkerDrained: {victim}")
                await anyio.sleep(1)
                stop.set()
            for editor in editors:
                async with JsonClient.connect(c.router_ws) as check:
                    await check.join(editor.session, "checker")
                    files = set(await check.get_files())
                assert editor.acked and set(editor.acked) <= files, set(editor.acked) - files
