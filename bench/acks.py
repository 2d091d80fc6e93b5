"""Acknowledgement latency and the storage cost of ownership: ``python -m bench.acks``.

Two questions from "one live owner per session, and success means stored":

1. What does a durable acknowledgement cost? JSON clients send ``fileOperation`` updates one
   after another (each waits for its ``fileOperationSuccess``); the client-side latency is
   measured with ``ACK_MODE=applied`` (answered at once, the old behaviour) and ``durable``
   (answered once stored), on the embedded store and on S3 (a SeaweedFS process), side by
   side in one run. Storage PUTs per acknowledged operation show the group commit.
2. What does ownership cost in steady state? A worker holds N live sessions with one client
   each and nobody types; storage requests per second over the idle window, for two N.

Prints a markdown report on stdout and progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.conftest import s3_env as store_env
from tests.s3server import S3Server, free_port, start_s3_server

ROOT = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@asynccontextmanager
async def worker(env: dict[str, str]) -> AsyncIterator[str]:
    port = free_port()
    full = {
        **os.environ,
        "PORT": str(port),
        "COLLAB_HOST": "127.0.0.1",
        "WORKER_ID": "bench",
        "LOG_FORMAT": "json",
        **env,
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once per measurement, returns at once
        [sys.executable, "-m", "worker"],
        env=full,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{base}/readyz", timeout=1)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("worker did not become ready")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


async def storage_requests(base: str) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base}/metrics")).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("collab_storage_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels] = float(value)
    return found


def delta(before: dict[str, float], after: dict[str, float], op: str | None = None) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if op is None or f'op="{op}"' in k)


async def one_client(base: str, session: str, ops: int, latencies: list[float]) -> None:
    async with websockets.connect(base.replace("http", "ws") + "/") as ws:
        await ws.send(json.dumps({"type": "join", "sessionId": session, "userId": "bench"}))
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        for i in range(ops):
            op = {"type": "update" if i else "create", "path": "a.txt", "content": f"v{i}\n"}
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "fileOperation", "data": op}))
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] in ("fileOperationSuccess", "error"):
                    break
            latencies.append(time.perf_counter() - started)


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000


async def ack_latency(
    backend: str, storage_env: dict[str, str], mode: str, clients: int, ops: int
) -> dict[str, Any]:
    env = {**storage_env, "ACK_MODE": mode}
    async with worker(env) as base:
        latencies: list[float] = []
        before = await storage_requests(base)
        started = time.perf_counter()
        await asyncio.gather(
            *(one_client(base, f"acks-{mode}-{i}", ops, latencies) for i in range(clients))
        )
        elapsed = time.perf_counter() - started
        await asyncio.sleep(1.0)  # the applied mode's interval flushes land in the window too
        after = await storage_requests(base)
    return {
        "backend": backend,
        "mode": mode,
        "clients": clients,
        "ops": len(latencies),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "ops_per_s": len(latencies) / elapsed,
        "puts_per_op": delta(before, after, "put") / len(latencies),
    }


async def idle_cost(storage_env: dict[str, str], sessions: int, window: float) -> dict[str, Any]:
    async with worker(storage_env) as base:
        sockets = []
        for i in range(sessions):
            ws = await websockets.connect(base.replace("http", "ws") + "/")
            await ws.send(json.dumps({"type": "join", "sessionId": f"idle-{i}", "userId": "u"}))
            sockets.append(ws)
        for ws in sockets:
            while json.loads(await ws.recv())["type"] != "joined":
                pass
        await asyncio.sleep(2.0)  # let the loads' own writes settle
        before = await storage_requests(base)
        await asyncio.sleep(window)
        after = await storage_requests(base)
        for ws in sockets:
            await ws.close()
    return {"sessions": sessions, "requests_per_s": delta(before, after) / window}


async def main(args: argparse.Namespace) -> None:
    with start_s3_server() as s3, tempfile.TemporaryDirectory() as tmp:
        backends = {
            "embedded": lambda name: {"STORAGE_DIR": str(Path(tmp) / name)},
            "s3 (SeaweedFS)": lambda name: s3_env(s3, name),
        }
        rows = []
        for backend, env_for in backends.items():
            for clients in args.clients:
                for mode in ("applied", "durable"):
                    say(f"acks: {backend}, {clients} client(s), {mode}")
                    rows.append(
                        await ack_latency(
                            backend, env_for(f"{mode}{clients}"), mode, clients, args.ops
                        )
                    )
        idle = []
        for n in args.sessions:
            say(f"idle: {n} live sessions, {args.window:.0f} s")
            idle.append(await idle_cost(backends["s3 (SeaweedFS)"](f"idle{n}"), n, args.window))
    print(report(rows, idle, args))


def s3_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return store_env(s3.store_kwargs(f"bench-{bucket}-{os.getpid()}"))


def report(rows: list[dict[str, Any]], idle: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"`python -m bench.acks --ops {args.ops} --clients {' '.join(map(str, args.clients))}`",
        "",
        "| storage | clients | ACK_MODE | acks | p50 ms | p99 ms | acks/s | PUTs per ack |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        out.append(
            f"| {r['backend']} | {r['clients']} | {r['mode']} | {r['ops']} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['ops_per_s']:.0f} | {r['puts_per_op']:.2f} |"
        )
    out += ["", "| live sessions (idle, 1 client each) | storage requests/s |", "| --- | --- |"]
    for r in idle:
        out.append(f"| {r['sessions']} | {r['requests_per_s']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200, help="operations per client")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--sessions", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--window", type=float, default=20.0, help="idle window, seconds")
    asyncio.run(main(parser.parse_args()))
