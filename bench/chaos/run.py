"""One chaos run, start to verdict.

1. Build the cluster (cluster.py): hosts, storage, three workers, two routers, all ready.
2. Start the workload on the client host; wait for ``RUN_DIR/workload.ready``.
3. Play the seed's schedule (schedule.py, faults.py) for ``duration`` seconds while sampling
   the workers' live sessions (observe.py) and restarting any worker or router that died by
   itself (counted: ``unexpected_exits``).
4. Heal everything, make sure every process runs and answers ``/readyz``, send the workload
   SIGUSR1 and wait for it to settle and write its final states.
5. Run the checker (checker.py) against the run directory and storage, still up.
6. Tear everything down (also on an error, Ctrl-C or SIGTERM).

Every wait is bounded; a 60 s run takes about 2-3 minutes of wall time on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cluster import Cluster, ClusterSettings, open_cluster
from .faults import Injector
from .observe import INTERVAL_S, TIMEOUT_S, sample_owners
from .schedule import plan
from .services import Service
from .topology import traffic_paths

WORKLOAD_READY_S = 120.0
SETTLE_S = 45.0  # the workload's --settle-timeout
WORKLOAD_EXIT_S = SETTLE_S + 45.0  # settle, then up to 30 s for final states, then slack
HEALTHY_AGAIN_S = 45.0
# Two workers' samples are not simultaneous: an answer describes its worker at some instant
# up to TIMEOUT_S before it arrived, and samples are INTERVAL_S apart; overlaps shorter than
# that are measurement, not two owners.
OWNER_BOUND_S = TIMEOUT_S + INTERVAL_S


@dataclass(frozen=True)
class Options:
    duration: float = 60.0
    seed: int = 0
    loopback: bool = False
    run_dir: Path | None = None
    lease_ttl_ms: int = 3000
    workload_args: tuple[str, ...] = field(default_factory=tuple)


async def run(options: Options, run_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    began = time.monotonic()
    paths = traffic_paths(worker_to_worker=not options.loopback)
    schedule = plan(options.seed, options.duration, paths)
    (run_dir / "schedule.json").write_text(
        json.dumps([asdict(p) | {"target": p.target} for p in schedule], indent=1)
    )
    report: dict[str, Any] = {
        "mode": "loopback" if options.loopback else "namespaces",
        "seed": options.seed,
        "duration_s": options.duration,
        "run_dir": str(run_dir),
    }
    settings = ClusterSettings(lease_ttl_ms=options.lease_ttl_ms)
    say(f"starting the cluster ({report['mode']}, lease {settings.lease_ttl_ms} ms)")
    async with open_cluster(
        run_dir, loopback=options.loopback, seed=options.seed, settings=settings
    ) as cluster:
        say(
            "cluster ready: storage "
            f"{cluster.storage.address}:{cluster.storage.port}, workers "
            + ", ".join(f"{w}={u.removeprefix('http://')}" for w, u in cluster.worker_urls.items())
            + f"; clients reach the routers at {', '.join(cluster.router_urls)}"
        )
        report.update(await _play(cluster, options, schedule, run_dir, say))
        if "error" not in report:
            say("checking")
            from .checker import check  # the checker's own module: only what it needs

            checked = await asyncio.to_thread(
                check, run_dir, s3=cluster.storage.store_kwargs(), owner_bound_s=OWNER_BOUND_S
            )
            report = {**checked, **report}
            report["owner_bound_s"] = OWNER_BOUND_S
    report["wall_s"] = round(time.monotonic() - began, 1)
    return report


async def _play(
    cluster: Cluster,
    options: Options,
    schedule: list[Any],
    run_dir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    result: dict[str, Any] = {"unexpected_exits": []}
    workload = Service(
        name="workload",
        argv=[
            sys.executable,
            *("-m", "bench.chaos.workload"),
            *("--routers", ",".join(cluster.router_urls)),
            *("--run-dir", str(run_dir)),
            *("--seed", str(options.seed)),
            *("--settle-timeout", str(SETTLE_S)),
            *options.workload_args,
        ],
        env={},
        log_path=run_dir / "logs" / "workload.log",
        prefix=cluster.client_prefix,
    )
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(
        sample_owners(
            cluster.worker_urls, cluster.admin_token, run_dir / "owners.jsonl", stop_sampling
        )
    )
    monitor = asyncio.create_task(_restart_the_dead(cluster, result["unexpected_exits"], say))
    injector = Injector(cluster, say)
    try:
        workload.start()
        if not await _ready(workload, run_dir / "workload.ready", WORKLOAD_READY_S):
            result["error"] = (
                f"the workload was not ready within {WORKLOAD_READY_S:.0f}s "
                f"(exit {workload.process.poll() if workload.process else None}):\n"
                + workload.log_tail()
            )
            return result
        say(f"workload ready; {len(schedule)} faults over {options.duration:g} s")
        try:
            await asyncio.wait_for(injector.play(schedule), options.duration + 60)
        finally:
            await injector.heal_all()
        say("every fault healed; waiting for every process to be ready")
        try:
            await cluster.wait_ready(HEALTHY_AGAIN_S)
        except RuntimeError as exc:
            say(f"not every process is ready again: {str(exc).splitlines()[0]}")
        say("workload: SIGUSR1 (stop writing, settle, write final states)")
        workload.signal(signal.SIGUSR1)
        if await workload.wait_exit(WORKLOAD_EXIT_S):
            assert workload.process is not None
            result["workload_exit"] = workload.process.returncode
        else:
            result["workload_exit"] = f"no exit within {WORKLOAD_EXIT_S:.0f}s (killed)"
        say(f"workload exited: {result['workload_exit']}")
        return result
    finally:
        injector.close()
        monitor.cancel()
        stop_sampling.set()
        await workload.terminate(5)
        try:
            result["owner_samples"] = await asyncio.wait_for(sampler, TIMEOUT_S + 2)
        except (TimeoutError, asyncio.CancelledError):
            sampler.cancel()
        await asyncio.gather(monitor, return_exceptions=True)


async def _ready(workload: Service, marker: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not marker.exists():  # noqa: ASYNC240 (one stat of a local file every 0.2 s)
        if not workload.running or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def _restart_the_dead(
    cluster: Cluster, exits: list[dict[str, Any]], say: Callable[[str], None]
) -> None:
    """A worker, router or storage that exited without a fault doing it: noted, started again."""
    while True:
        await asyncio.sleep(0.5)
        for service in cluster.services.values():
            if service.held or service.running or service.process is None:
                continue
            code = service.process.returncode
            exits.append({"process": service.name, "code": code, "t": time.time()})
            say(f"! {service.name} exited by itself (code {code}); starting it again")
            service.start()
        storage = cluster.storage
        if not storage.held and not storage.running:
            exits.append({"process": "storage", "code": None, "t": time.time()})
            say("! storage exited by itself; starting it again")
            await storage.start()
