"""What the namespace tests share: the skip rule, hosts with probes, asking a probe."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.chaos.hosts import Namespaces, namespaces_unavailable
from bench.chaos.topology import HOSTS
from tests.chaos.probe import COUNTS

ROOT = Path(__file__).resolve().parents[2]


def need_namespaces() -> None:
    """Skip where this machine forbids namespaces (not root, no ip or nft), with the reason;
    never in CI, which runs as root with nftables installed (.ci/run): there it fails."""
    why = namespaces_unavailable()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the namespace tests, but {why}")
    pytest.skip(why)


@contextmanager
def hosts_with_probes() -> Iterator[Namespaces]:
    """Every host of the topology as a namespace, each running ``probe serve``."""
    need_namespaces()
    ns = Namespaces.create(HOSTS)
    probes: list[subprocess.Popen[str]] = []
    try:
        probes += [
            subprocess.Popen(
                [
                    *ns.exec_prefix(h),
                    sys.executable,
                    "-m",
                    "tests.chaos.probe",
                    "serve",
                    ns.address(h),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for h in HOSTS
        ]
        for probe in probes:
            assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        yield ns
    finally:
        ns.destroy()  # kills the probes with everything else in the namespaces
        for probe in probes:
            probe.wait(timeout=5)
            if probe.stdout is not None:
                probe.stdout.close()


def tcp(ns: Namespaces, src: str, dst: str, *, count: int = 5, timeout: float = 1.0) -> str:
    """``src``'s round trip to ``dst`` in ms (a number as text), or why there is none."""
    done = subprocess.run(
        [
            *ns.exec_prefix(src),
            *(sys.executable, "-m", "tests.chaos.probe", "tcp", ns.address(dst)),
            *("--count", str(count), "--timeout", str(timeout)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() or done.stderr.strip()


def reaches(ns: Namespaces, src: str, dst: str) -> bool:
    return tcp(ns, src, dst, count=1).replace(".", "").isdigit()


def udp(ns: Namespaces, src: str, dst: str, count: int) -> None:
    subprocess.run(
        [
            *ns.exec_prefix(src),
            sys.executable,
            "-m",
            "tests.chaos.probe",
            "udp",
            ns.address(dst),
            str(count),
        ],
        cwd=ROOT,
        check=True,
        timeout=30,
    )


def received(ns: Namespaces, host: str) -> dict[str, int]:
    """What ``host``'s sink received since the last ask, by sender host (asked from root)."""
    with socket.create_connection((ns.address(host), COUNTS), timeout=5) as conn:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    by_address = {ns.address(h): h for h in HOSTS}
    return {by_address.get(a, a): n for a, n in json.loads(data).items()}


# The same, off the event loop: a delay line relays frames on the test's loop, so a probe
# that blocks it would wait for itself.
async def atcp(ns: Namespaces, src: str, dst: str, *, count: int = 5, timeout: float = 1.0) -> str:
    return await asyncio.to_thread(tcp, ns, src, dst, count=count, timeout=timeout)


async def areaches(ns: Namespaces, src: str, dst: str) -> bool:
    return await asyncio.to_thread(reaches, ns, src, dst)


async def audp(ns: Namespaces, src: str, dst: str, count: int) -> None:
    await asyncio.to_thread(udp, ns, src, dst, count)
    await asyncio.sleep(0.2)  # the last datagrams land


async def areceived(ns: Namespaces, host: str) -> dict[str, int]:
    return await asyncio.to_thread(received, ns, host)
