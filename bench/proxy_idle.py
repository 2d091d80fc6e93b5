"""Memory a proxy holds per idle relayed WebSocket: the router against nginx.

    python -m bench.proxy_idle                 # 2,000 connections over 1,000 rooms, both proxies
    python -m bench.proxy_idle --connections 500 --targets router

Two workers behind each proxy (as in `python -m bench.router`); the clients complete the
y-websocket handshake and then stay idle. Reported: the proxy's RSS (process tree) before the
clients and after they all connected and settled, and the difference per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import websockets

from bench import procstat
from bench.router import TITLES, port_of, proxy_spec, worker_spec
from bench.target import running

SETTLE_S = 2.0


def tree_rss(pid: int) -> int:
    """RSS of the proxy's whole process tree (nginx: master + worker)."""
    return sum(procstat.rss_bytes(p) for p in procstat.tree(pid))


async def measure(target: str, connections: int, rooms: int) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(running(worker_spec(n))) for n in ("w-0", "w-1")]
        upstreams = ",".join(f"127.0.0.1:{port_of(w)}" for w in workers)
        proxy = await stack.enter_async_context(running(proxy_spec(target, upstreams)))
        await asyncio.sleep(SETTLE_S)
        before = tree_rss(proxy.pid)
        clients = []
        try:
            for i in range(connections):
                url = f"{proxy.url}/idle-{i % rooms}/a.txt"
                clients.append(await websockets.connect(url, max_size=None))
            await asyncio.sleep(SETTLE_S)
            after = tree_rss(proxy.pid)
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {
        "target": target,
        "connections": connections,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "kb_per_connection": (after - before) / 1024 / connections,
    }


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for target in args.targets.split(","):
        print(f"{TITLES[target]}: {args.connections} idle connections", file=sys.stderr)
        rows.append(await measure(target, args.connections, args.rooms))
    print(f"`python -m bench.proxy_idle --connections {args.connections}`\n")
    print("| proxy | RSS before → after | KB per idle connection |")
    print("| --- | --- | --- |")
    for row in rows:
        print(
            f"| {TITLES[row['target']]} | {row['rss_before_mb']:.1f} → {row['rss_after_mb']:.1f} MB"
            f" | {row['kb_per_connection']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--targets", default="router,nginx")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
