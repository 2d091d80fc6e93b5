"""SIGKILL the busiest worker under many editors: ``python -m bench.failover``.

Three ``collab worker`` processes behind a ``collab router`` (embedded storage), ``--sessions``
sessions with two y-websocket clients each (one document per session). Every client behaves as
y-websocket's provider does: on any close it reconnects with exponential backoff (100 ms * 2**n,
at most 2.5 s) and syncs both ways. One writer per session types a line, the pool flushes, then
the worker holding the most sessions is SIGKILLed. Measured from the kill: when every client is
connected and synced again, and when every session has converged (each writer types a second
line and its partner sees it). Takeovers by reason come from the survivors' metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets
from pycrdt import Doc, Text

from tests.s3server import free_port
from worker import yjs_protocol as yjs

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Editor:
    url: str
    room: str
    doc: Doc = field(default_factory=Doc)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connects: int = 0
    ws: websockets.ClientConnection | None = None

    @property
    def text(self) -> str:
        return str(self.doc.get("content", type=Text))

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                async with websockets.connect(f"{self.url}/yjs/{self.room}", max_size=None) as ws:
                    self.ws = ws
                    self.connects += 1
                    failures = 0
                    await ws.send(yjs.sync_step1(self.doc.get_state()))
                    async for raw in ws:
                        if isinstance(raw, str):
                            continue
                        frame = yjs.parse(raw)
                        if frame.kind != yjs.MSG_SYNC:
                            continue
                        if frame.step == yjs.SYNC_STEP1:
                            await ws.send(yjs.sync_step2(self.doc.get_update(frame.payload)))
                        else:
                            self.doc.apply_update(frame.payload)
                            if frame.step == yjs.SYNC_STEP2:
                                self.synced.set()
                            self.changed.set()
            except (OSError, websockets.WebSocketException):
                failures += 1
            self.ws = None
            self.synced.clear()
            await asyncio.sleep(min(0.1 * 2**failures, 2.5) * random.uniform(0.8, 1.2))

    async def type(self, line: str) -> None:
        await self.synced.wait()  # set only while connected (cleared on every close)
        assert self.ws is not None
        before = self.doc.get_state()
        text = self.doc.get("content", type=Text)
        text.insert(len(str(text)), line)
        await self.ws.send(yjs.update_message(self.doc.get_update(before)))

    async def sees(self, line: str) -> None:
        while line not in self.text:
            self.changed.clear()
            await self.changed.wait()


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, "LOG_FORMAT": "json", "COLLAB_HOST": "127.0.0.1", **env},
        cwd=ROOT,
        stdout=out,
        stderr=out,
    )


async def ready(base: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):
            try:
                if (await http.get(f"{base}/readyz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{base} not ready")


async def metric_sum(base: str, name: str) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base}/metrics")).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="collab-failover-"))
    ports = [free_port() for _ in range(3)]
    common = {
        "STORAGE_DIR": str(tmp / "storage"),
        "ADMIN_TOKEN": TOKEN,
        "LEASE_TTL_MS": str(args.lease_ttl_ms),
    }
    workers = {
        f"w-{i}": spawn(
            "worker", {**common, "PORT": str(p), "WORKER_ID": f"w-{i}"}, tmp / f"w{i}.log"
        )
        for i, p in enumerate(ports)
    }
    router_port = free_port()
    router = spawn(
        "router",
        {
            "PORT": str(router_port),
            "WORKERS": ",".join(f"127.0.0.1:{p}" for p in ports),
            "ADMIN_TOKEN": TOKEN,
            "HEALTH_INTERVAL_MS": "500",
        },
        tmp / "router.log",
    )
    try:
        await asyncio.gather(*(ready(f"http://127.0.0.1:{p}") for p in ports))
        await ready(f"http://127.0.0.1:{router_port}")
        url = f"ws://127.0.0.1:{router_port}"
        say(f"connecting {2 * args.sessions} clients to {args.sessions} sessions")
        pairs = [
            (Editor(url, f"fo-{i}/a.txt"), Editor(url, f"fo-{i}/a.txt"))
            for i in range(args.sessions)
        ]
        editors = [e for pair in pairs for e in pair]
        tasks = []
        for i, e in enumerate(editors):
            tasks.append(asyncio.create_task(e.run()))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # a join storm, but a bounded one
        await asyncio.wait_for(asyncio.gather(*(e.synced.wait() for e in editors)), 120)
        await asyncio.gather(*(w.type(f"before-{i};") for i, (w, _) in enumerate(pairs)))
        await asyncio.wait_for(
            asyncio.gather(*(r.sees(f"before-{i};") for i, (_, r) in enumerate(pairs))), 60
        )
        await asyncio.sleep(1.5)  # flushed (FLUSH_INTERVAL_MS 500)
        counts = {}
        async with httpx.AsyncClient() as http:
            for name, port in zip(workers, ports, strict=True):
                status = (await http.get(f"http://127.0.0.1:{port}/readyz")).json()
                counts[name] = status["sessions"]
        victim = max(counts, key=lambda n: counts[n])
        connects = {id(e): e.connects for e in editors}
        say(f"sessions per worker {counts}; SIGKILL {victim}")
        killed = time.monotonic()
        workers[victim].send_signal(signal.SIGKILL)

        async def back(e: Editor) -> None:
            """Connected and synced (again, for the victim's clients; the others stay put)."""
            await e.synced.wait()

        await asyncio.sleep(0.2)  # let the victim's clients notice
        await asyncio.wait_for(asyncio.gather(*(back(e) for e in editors)), 120)
        reconnected_s = time.monotonic() - killed
        await asyncio.gather(*(w.type(f"after-{i};") for i, (w, _) in enumerate(pairs)))
        await asyncio.wait_for(
            asyncio.gather(*(r.sees(f"after-{i};") for i, (_, r) in enumerate(pairs))), 120
        )
        converged_s = time.monotonic() - killed
        lost = sum(1 for i, (w, r) in enumerate(pairs) if f"before-{i};" not in r.text)
        takeovers: dict[str, float] = {}
        for name, port in zip(workers, ports, strict=True):
            if name != victim:
                found = await metric_sum(
                    f"http://127.0.0.1:{port}", "collab_ownership_takeovers_total"
                )
                for labels, value in found.items():
                    reason = labels.partition('reason="')[2].rstrip('"}')
                    takeovers[reason] = takeovers.get(reason, 0) + value
        again = sum(1 for e in editors if e.connects > connects[id(e)])
        print(
            "\n".join(
                [
                    f"`python -m bench.failover --sessions {args.sessions}` "
                    f"(LEASE_TTL_MS {args.lease_ttl_ms})",
                    "",
                    "| clients | sessions | killed worker held | clients that reconnected | "
                    "all back and synced | all converged | sessions missing a line | takeovers |",
                    "| --- | --- | --- | --- | --- | --- | --- | --- |",
                    f"| {len(editors)} | {args.sessions} | {counts[victim]} | {again} "
                    f"| {reconnected_s:.2f} s | {converged_s:.2f} s | {lost} | "
                    + ", ".join(f"{k}: {v:.0f}" for k, v in takeovers.items())
                    + " |",
                ]
            )
        )
        for t in tasks:
            t.cancel()
    finally:
        router.terminate()
        for p in workers.values():
            if p.poll() is None:
                p.terminate()
        for p in [router, *workers.values()]:
            p.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1500)
    parser.add_argument("--lease-ttl-ms", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
