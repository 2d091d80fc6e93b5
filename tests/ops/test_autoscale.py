"""`collab autoscale`: decisions (pure), decisions from a live pool's metrics, and the Swarm path
against a stand-in `docker` executable (no Docker engine here) that records its arguments."""

from __future__ import annotations

import json
import os
import stat
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from ops.swarm_autoscaler import Autoscaler, Policy
from tests.cli import collab
from tests.jsclient import js_client, requires_node
from tests.pool import TOKEN, Pool, pool, sessions_owned_by
from tests.s3server import free_port
from tests.support import JsonClient, wait_until

NAMES = ["w-0", "w-1", "w-2"]
REPLICAS = "{{.Spec.Mode.Replicated.Replicas}}"
# The worker service of swarm.yml deployed as `collaborative-session`, as in the original's README.
SERVICE = "collaborative-session_collaborative-worker"


class TestDecisions:
    def policy(self, delay: float = 300) -> Policy:
        return Policy(target=10, minimum=2, maximum=6, scale_down_delay_s=delay)

    def test_it_scales_up_at_once_to_the_sessions_over_the_target(self) -> None:
        d = Autoscaler(self.policy()).decide(0, current=2, sessions=41)
        assert (d.action, d.desired) == ("scale up", 5)
        assert d.reason == "41 sessions / 10 per worker needs 5"

    def test_the_count_stays_within_min_and_max(self) -> None:
        scaler = Autoscaler(self.policy(delay=0))
        assert scaler.decide(0, current=4, sessions=1000).desired == 6
        assert scaler.decide(1, current=6, sessions=0).desired == 2

    def test_it_holds_when_the_count_is_right(self) -> None:
        d = Autoscaler(self.policy()).decide(0, current=3, sessions=25)
        assert (d.action, d.desired) == ("hold", 3)

    def test_it_does_not_scale_down_before_a_whole_cool_off_was_observed(self) -> None:
        scaler = Autoscaler(self.policy(delay=300))
        d = scaler.decide(0, current=5, sessions=10)
        assert (d.action, d.desired) == ("hold", 5) and "cool-off has run 0 s" in d.reason
        assert scaler.decide(299, current=5, sessions=10).action == "hold"
        later = scaler.decide(300, current=5, sessions=10)
        assert (later.action, later.desired) == ("scale down", 2)

    def test_it_scales_down_only_to_the_highest_need_in_the_window(self) -> None:
        scaler = Autoscaler(self.policy(delay=100))
        scaler.decide(0, current=5, sessions=10)
        scaler.decide(50, current=5, sessions=40)  # a burst: 4 needed
        d = scaler.decide(120, current=5, sessions=10)
        assert (d.action, d.desired) == ("scale down", 4)
        assert "at most 4 needed in the last 100 s" in d.reason
        assert scaler.decide(151, current=4, sessions=10).desired == 2  # the burst aged out

    def test_a_lull_inside_the_window_does_not_flap(self) -> None:
        scaler = Autoscaler(self.policy(delay=60))
        actions = [
            scaler.decide(t, current=4, sessions=s).action
            for t, s in [(0, 40), (20, 5), (40, 40), (60, 5), (80, 40)]
        ]
        assert actions == ["hold"] * 5


async def cli(p: Pool, *args: str, **env: str) -> Any:
    done = await collab(
        "autoscale",
        *args,
        env={"COLLAB_ROUTER": p.http, "COLLAB_ADMIN_TOKEN": TOKEN, **env},
    )
    return done


async def hold_sessions(p: Pool, stack: AsyncExitStack, sessions: list[str]) -> None:
    for i, s in enumerate(sessions):
        j = await stack.enter_async_context(JsonClient.connect(p.url))
        await j.join(s, f"u{i}")
    await wait_until(
        lambda: sum(i.sessions for i in p.router.membership.workers.values()) == len(sessions),
        10,
        f"{len(sessions)} live sessions",
    )


class TestFromLiveMetrics:
    async def test_the_decision_uses_the_workers_session_metric(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p, AsyncExitStack() as stack:
            await hold_sessions(p, stack, [f"as-{i}" for i in range(5)])
            done = await cli(
                p,
                "--target-sessions-per-worker",
                "2",
                "--min",
                "1",
                "--max",
                "4",
                "--dry-run",
                "--rounds",
                "1",
                "--json",
            )
            assert done.returncode == 0, done.stderr
            row = json.loads(done.stdout)
            assert (row["sessions"], row["current"], row["desired"]) == (5, 2, 3)
            assert row["action"] == "scale up" and row["applied"] == "not applied (dry run)"
            table = await cli(p, "--target-sessions-per-worker", "5", "--rounds", "2")
            lines = table.stdout.splitlines()
            assert lines[0].split()[:5] == ["AT", "SESSIONS", "CURRENT", "DESIRED", "ACTION"]
            # 5 sessions fit one worker, but no scale-down before a whole cool-off.
            assert [line.split()[4] for line in lines[1:]] == ["hold", "hold"]
            assert "cool-off" in lines[1]


class TestUnreachable:
    async def test_a_round_that_cannot_read_the_pool_is_skipped_and_the_next_tries_again(
        self,
    ) -> None:
        router = f"http://127.0.0.1:{free_port()}"
        done = await collab(
            "autoscale",
            "--target-sessions-per-worker",
            "5",
            "--rounds",
            "2",
            "--interval",
            "0.1",
            env={"COLLAB_ROUTER": router, "COLLAB_ADMIN_TOKEN": TOKEN},
        )
        assert done.returncode == 1 and done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 2 and all(f"cannot reach the router at {router}" in x for x in lines)
        assert lines[0].endswith("; next round in 0.1 s") and "next round" not in lines[1]


STAND_IN = """#!{python}
# A stand-in `docker` CLI: records every call; `service scale` stops the tasks Swarm would pick
# (here: the highest-numbered workers, not the ones the autoscaler drained).
import json, os, signal, sys, urllib.request
args = sys.argv[1:]
state = os.environ["DOCKER_STATE"]
record = {{"argv": args}}
if args[:2] == ["service", "inspect"]:
    print(open(state).read().strip())
elif args[:2] == ["service", "scale"]:
    wanted = int(args[-1].rpartition("=")[2])
    request = urllib.request.Request(
        os.environ["COLLAB_ROUTER"] + "/admin/workers",
        headers={{"authorization": "Bearer " + os.environ["COLLAB_ADMIN_TOKEN"]}},
    )
    record["workers"] = json.load(urllib.request.urlopen(request))["workers"]
    tasks = json.loads(os.environ["DOCKER_TASKS"])
    for name in sorted(tasks)[wanted:]:
        os.kill(tasks[name], signal.SIGTERM)
    open(state, "w").write(str(wanted))
else:
    sys.exit("stand-in docker: unexpected call " + " ".join(args))
with open(os.environ["DOCKER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


def stand_in_docker(tmp: Path, replicas: int) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(STAND_IN.format(python=sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    (tmp / "replicas").write_text(str(replicas))
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DOCKER_STATE": str(tmp / "replicas"),
        "DOCKER_LOG": str(tmp / "docker.log"),
    }


def calls(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "docker.log").read_text().splitlines()]


class TestSwarm:
    async def test_scale_up_runs_docker_service_scale(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p, AsyncExitStack() as stack:
            await hold_sessions(p, stack, [f"up-{i}" for i in range(5)])
            env = stand_in_docker(tmp_path, 2)
            env["DOCKER_TASKS"] = "{}"
            done = await cli(
                p,
                "--target-sessions-per-worker",
                "2",
                "--max",
                "8",
                "--swarm-service",
                SERVICE,
                "--rounds",
                "1",
                **env,
            )
            assert done.returncode == 0, done.stderr
            assert [c["argv"] for c in calls(tmp_path)] == [
                [
                    "service",
                    "inspect",
                    "--format",
                    "{{.Spec.Mode.Replicated.Replicas}}",
                    SERVICE,
                ],
                ["service", "scale", "--detach", f"{SERVICE}=3"],
            ]
            assert f"-> scaled {SERVICE} to 3" in done.stdout

    @pytest.mark.node
    @requires_node
    async def test_scale_down_drains_first_and_undrains_a_worker_swarm_kept(
        self, tmp_path: Path
    ) -> None:
        on_w0 = sessions_owned_by("w-0", NAMES, 2, "keep")
        on_w2 = sessions_owned_by("w-2", NAMES, 2, "moved")
        async with pool(tmp_path, 3) as p, AsyncExitStack() as stack:
            await hold_sessions(p, stack, on_w0 + on_w2[:1])
            js = await stack.enter_async_context(js_client(f"{p.url}/yjs", f"{on_w2[1]}/f.txt"))
            await js.insert("[before]")
            env = stand_in_docker(tmp_path, 3)
            env["DOCKER_TASKS"] = json.dumps({n: w.proc.pid for n, w in p.workers.items()})
            done = await cli(
                p,
                "--target-sessions-per-worker",
                "10",
                "--min",
                "2",
                "--scale-down-delay",
                "0",
                "--swarm-service",
                SERVICE,
                "--rounds",
                "1",
                "--settle-timeout",
                "20",
                **env,
            )
            assert done.returncode == 0, done.stderr
            inspect, scale = calls(tmp_path)
            assert scale["argv"] == ["service", "scale", "--detach", f"{SERVICE}=2"]
            # w-1 held no session, so it was the one drained, before Swarm was asked.
            at_scale = {w["id"]: (w["state"], w["sessions"]) for w in scale["workers"]}
            assert at_scale["w-1"] == ("draining", 0), at_scale
            assert f"-> drained w-1, scaled {SERVICE} to 2; undrained w-1" in done.stdout
            # Swarm stopped w-2 instead (it drained on SIGTERM); w-1 is back in the pool.
            await p.wait_ring({"w-0", "w-1"})
            await js.insert("[after]")
            state = await js.wait(expect_contains=["[before]", "[after]"], timeout_ms=15_000)
            assert js.reconnects >= 1 and "[before]" in state["text"]
            assert inspect["argv"][:2] == ["service", "inspect"]
