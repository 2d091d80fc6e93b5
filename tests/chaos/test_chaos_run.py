"""``python -m bench.chaos`` end to end: a 60 s run of random overlapping faults keeps every
guarantee, on loopback and (where namespaces work) on the namespace cluster.

Each run is real: SeaweedFS, three workers, two routers, the workload's y-websocket, pycrdt
and JSON clients, the checker. About 80 s of wall time each on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.chaos.report import KEYS
from bench.chaos.schedule import KINDS
from tests.chaos.namespaces import ROOT, need_namespaces

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.node, pytest.mark.timeout(420)]


@pytest.mark.parametrize("mode", ["loopback", "namespaces"])
def test_a_60s_run_keeps_every_guarantee(mode: str) -> None:
    if mode == "namespaces":
        need_namespaces()
    argv = [sys.executable, "-m", "bench.chaos", "--duration", "60", "--seed", "7", "--json"]
    if mode == "loopback":
        argv.append("--loopback")
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400)
    progress = done.stderr[-6000:]
    assert done.stdout.strip(), progress
    report = json.loads(done.stdout.strip().splitlines()[-1])
    summary = {k: v for k, v in report.items() if k != "details"}
    assert done.returncode == 0, f"{summary}\n{progress}"
    assert set(KEYS) <= set(report)
    assert set(report["faults"]) == set(KINDS), report["faults"]
    assert report["mode"] == mode and report["max_live_owners"] == 1
    assert set(report["recovery_s"]) >= {"p50", "p99", "max"}
    assert report["wall_s"] < 240, summary  # "within about 3 minutes" on 2 cores
