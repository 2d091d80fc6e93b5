"""The chaos workload against a real pool on loopback, a worker SIGKILLed in the middle, and the
checker's verdict on what the clients and storage hold afterwards.

Two workers (subprocesses) on a real S3 server behind two routers, the workload as its own
process (as the orchestrator runs it), the workers' live sessions sampled as the orchestrator
does, one fault logged the orchestrator's way.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.chaos.checker import check
from router.settings import RouterSettings
from tests.conftest import s3_env
from tests.jsclient import ensure_node_modules, requires_node
from tests.pool import TOKEN, Pool, another_router, pool
from tests.s3server import S3Server, free_port
from tests.support import ROOT, wait_until

pytestmark = [pytest.mark.node, pytest.mark.s3, pytest.mark.slow]

SEED = 7


async def sample_owners(p: Pool, out: Path, stop: asyncio.Event) -> None:
    """Every 0.25 s, each worker's live sessions, one line per answer (owners.jsonl)."""
    with open(out, "a", buffering=1) as lines:
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not stop.is_set():
                for name, worker in list(p.workers.items()):
                    sent = time.time()
                    live: list[str] = []
                    try:
                        r = await http.get(
                            f"{worker.http}/admin/sessions",
                            headers={"authorization": f"Bearer {TOKEN}"},
                        )
                        ok = r.status_code == 200
                        if ok:
                            sessions = r.json()["sessions"]
                            live = [s["sessionId"] for s in sessions if s["state"] == "live"]
                    except httpx.HTTPError:
                        ok = False
                    row = {"t": time.time(), "sent": sent, "worker": name, "ok": ok, "live": live}
                    lines.write(json.dumps(row) + "\n")
                try:
                    await asyncio.wait_for(stop.wait(), 0.25)
                except TimeoutError:
                    pass


@requires_node
async def test_a_killed_worker_loses_no_acknowledged_write(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """Clients of every kind on both routers, the owner of a session SIGKILLed mid-run: the
    workload settles, and the checker finds nothing lost, missing, duplicated or diverged,
    one live owner per session, nobody stuck, and the kill's victims back within seconds."""
    await ensure_node_modules()
    s3: dict[str, Any] = s3_server.store_kwargs(f"chaos-{uuid.uuid4().hex[:12]}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = tmp_path / "workload.log"
    async with pool(tmp_path, workers=2, env=s3_env(s3)) as p:
        second = RouterSettings(
            host="127.0.0.1",
            port=free_port(),
            workers=tuple(p.addresses),
            admin_token=TOKEN,
            health_interval_ms=200,
        )
        async with another_router(second):
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_owners(p, run_dir / "owners.jsonl", stop))
            with open(log, "wb") as err:
                workload = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.chaos.workload",
                    f"--routers={p.url},ws://127.0.0.1:{second.port}",
                    f"--run-dir={run_dir}",
                    f"--seed={SEED}",
                    "--sessions=2",
                    "--js=2",
                    "--py=2",
                    "--json=2",
                    "--rate=4",
                    "--settle-timeout=45",
                    cwd=ROOT,
                    stderr=err,
                )
            try:
                await wait_until(
                    lambda: (run_dir / "workload.ready").exists(), 60, "workload.ready"
                )
                await asyncio.sleep(3)
                victim = p.owner(f"chaos-{SEED}-0")
                assert victim is not None
                killed = time.time()
                p.workers[victim].kill()
                fault = {"id": "f1", "kind": "kill", "target": victim, "detail": {}}
                fault |= {"start": killed, "end": killed}
                (run_dir / "faults.jsonl").write_text(json.dumps(fault) + "\n")
                await asyncio.sleep(5)
                workload.send_signal(signal.SIGUSR1)
                code = await asyncio.wait_for(workload.wait(), 90)
            finally:
                if workload.returncode is None:
                    workload.kill()
                    await workload.wait()
                stop.set()
                await sampler
            assert code == 0, log.read_text()[-3000:]
    # The pool stopped gracefully: everything the surviving worker held is in storage.
    report = check(run_dir, s3=s3, owner_bound_s=2.0, storage_wait_s=5)
    summary = json.dumps(report, indent=1)[:6000]
    assert report["acked"] > 0, summary
    assert report["lost"] == 0, summary
    assert report["missing_tokens"] == 0, summary
    assert report["duplicated_tokens"] == 0, summary
    assert report["diverged_files"] == 0, summary
    assert report["stuck_clients"] == 0, summary
    assert report["max_live_owners"] == 1, summary
    assert report["faults"] == {"kill": 1}
    assert report["ok"] is True, summary
    (row,) = report["details"]["recovery"]["rows"]
    assert row["affected"], summary  # the victim owned a session: its clients were cut off
    assert report["recovery_s"]["max"] < 15, summary
    finals = [
        json.loads(line)
        for path in (run_dir / "clients").glob("*.jsonl")
        for line in path.read_text().splitlines()
        if '"ev": "final"' in line
    ]
    assert len(finals) == 6 and all(f["settled"] for f in finals)
