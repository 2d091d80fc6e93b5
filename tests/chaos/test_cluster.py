"""The chaos cluster on namespaces: it comes up with every role answering across the bridge,
process and storage faults do what they say, and teardown leaves nothing behind.

Real processes (SeaweedFS, ``python -m worker`` x3, ``python -m router`` x2), each in its own
namespace. Needs root, ``ip`` and ``nft`` (skipped with the reason elsewhere; never in CI).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.chaos.cluster import Cluster, fresh_run_dir, open_cluster, remove_run_dir
from bench.chaos.faults import Kill, Stop, StorageRestart
from bench.chaos.hosts import leftovers
from bench.chaos.schedule import Planned
from tests.chaos.namespaces import ROOT, need_namespaces
from worker.storage import StorageUnavailable
from worker.storage.minio import MinioStore

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.timeout(180)]
FAULT_LINE = re.compile(r"^\[\s*[\d.]+s\] \+ ")


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    need_namespaces()
    run_dir = fresh_run_dir()
    try:
        async with open_cluster(run_dir, loopback=False, seed=1) as up:
            yield up
        assert up.namespaces is not None and leftovers(up.namespaces.run) == []
        assert not any(s.running for s in up.services.values()) and not up.storage.running
    finally:
        remove_run_dir(run_dir)


async def get(url: str, timeout: float = 2.0) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await http.get(url)


def fault(kind: str, target: str) -> Planned:
    return Planned(at=0.0, duration=1.0, kind=kind, hosts=(target,))


class TestClusterOnNamespaces:
    async def test_every_role_answers_across_the_bridge(self, cluster: Cluster) -> None:
        assert cluster.namespaces is not None
        for name, url in cluster.worker_urls.items():
            assert url.startswith("http://10.77."), url  # a host of its own, not loopback
            ready = (await get(f"{url}/readyz")).json()
            assert ready["worker"] == name and ready["storage"] == "ok"  # it reaches storage
        for router in ("r0", "r1"):
            ready_url = cluster.services[router].ready_url
            assert ready_url is not None
            # Every router reaches every worker ...
            assert (await get(ready_url)).json()["workers"]["active"] == 3
            # ... and the client host reaches every router.
            probe = (
                "import sys, urllib.request; "
                "print(urllib.request.urlopen(sys.argv[1], timeout=5).status)"
            )
            done = await asyncio.to_thread(
                subprocess.run,
                [*cluster.client_prefix, sys.executable, "-c", probe, ready_url],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.stdout.strip() == "200", done.stderr

    async def test_sigstop_freezes_a_worker_and_sigcont_resumes_it(self, cluster: Cluster) -> None:
        stop = Stop(fault("stop", "w1"), 1, cluster)
        url = f"{cluster.worker_urls['w1']}/readyz"
        pid = cluster.services["w1"].pid
        await stop.inject()
        try:
            with pytest.raises(httpx.TimeoutException):
                await get(url, timeout=1.0)
            assert cluster.services["w1"].running  # frozen, not dead
        finally:
            await stop.heal()
        assert (await get(url, timeout=5.0)).status_code == 200
        assert cluster.services["w1"].pid == pid

    async def test_sigkill_then_restart_keeps_the_name_and_address(self, cluster: Cluster) -> None:
        kill = Kill(fault("kill", "r1"), 2, cluster)
        router = cluster.services["r1"]
        assert router.ready_url is not None
        await kill.inject()
        assert not router.running
        with pytest.raises(httpx.ConnectError):
            await get(router.ready_url)
        await kill.heal()
        await router.wait_ready(30)
        assert (await get(router.ready_url)).json()["router"] == "r1"
        assert kill.detail["new_pid"] != kill.detail["pid"]

    async def test_a_storage_restart_keeps_every_object(self, cluster: Cluster) -> None:
        store = MinioStore(**cluster.storage.store_kwargs())
        try:
            await store.put("chaos-test/kept", b"still here")
            restart = StorageRestart(fault("storage_restart", "storage"), 3, cluster)
            await restart.inject()
            with pytest.raises(StorageUnavailable):
                await store.get("chaos-test/kept")
            await restart.heal()
            assert await store.get("chaos-test/kept") == b"still here"
        finally:
            await store.aclose()


@pytest.mark.timeout(240)
def test_sigterm_mid_run_tears_everything_down(tmp_path: Path) -> None:
    """The command itself, stopped as a supervisor would stop it, leaves no namespace, link or
    process behind."""
    need_namespaces()
    before = set(_our_namespaces())
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.chaos", "--duration", "60", "--seed", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert run.stdout is not None
    run_dir = None
    deadline = time.monotonic() + 150
    lines = []
    try:
        for line in run.stdout:
            lines.append(line)
            if line.startswith("run directory: "):
                run_dir = line.removeprefix("run directory: ").strip()
            if FAULT_LINE.match(line) or time.monotonic() > deadline:  # the first fault is in
                break
        assert run_dir, "".join(lines)
        assert set(_our_namespaces()) > before, "".join(lines)
        run.send_signal(signal.SIGTERM)
        rest, _ = run.communicate(timeout=60)
        assert run.returncode == 130, "".join(lines) + rest
        assert set(_our_namespaces()) <= before
        assert not _processes_mentioning(run_dir)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stdout.close()
        if run_dir:  # kept by the command: it was interrupted
            remove_run_dir(Path(run_dir))


def _our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("chaos-")]


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line or environment names ``text`` (the run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(text.encode() in (entry / part).read_bytes() for part in ("cmdline", "environ")):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
