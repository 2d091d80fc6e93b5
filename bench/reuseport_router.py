"""A measurement of what several router processes on one port would buy; not a deployment mode.

    python -m bench.router --shapes fanout --router-cmd "{python} -m bench.reuseport_router" \\
        --router-env REUSEPORT_PROCESSES=2

Starts REUSEPORT_PROCESSES (default 2) complete, independent routers (`python -m router`, each
with its own health checks, admin API and metrics) listening on one port with SO_REUSEPORT, so
that the kernel spreads client connections over them. This is the "more relay processes" lever
of docs/benchmarks.md ("Router vs nginx") reduced to its latency and CPU effect, so that it can
be measured before anything is built: the processes do not share membership, drains, metrics
or the admin API (a scrape or an admin call reaches one of them at random), which is why the
router has no such mode (docs/router.md, "Performance").

The benchmark measures the CPU of the whole process tree (this process is the first router).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
from typing import Any

CHILD = "REUSEPORT_CHILD"


class _ReusePortLoop:
    """The running loop, with ``create_server`` binding its port with SO_REUSEPORT."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["reuse_port"] = True
        return await self._loop.create_server(*args, **kwargs)


def main() -> None:
    import asyncio

    import router.server
    from router.__main__ import main as router_main

    count = int(os.environ.get("REUSEPORT_PROCESSES", "2"))
    children = []
    if CHILD not in os.environ:
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.reuseport_router"], env={**os.environ, CHILD: "1"}
            )
            for _ in range(count - 1)
        ]
    # router/server.py opens its public port with `asyncio.get_running_loop().create_server`.
    vars(router.server)["asyncio"] = types.SimpleNamespace(
        get_running_loop=lambda: _ReusePortLoop(asyncio.get_running_loop())
    )
    try:
        router_main()
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(10)


if __name__ == "__main__":
    main()
