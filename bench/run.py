"""Run every benchmark shape against every server, side by side, in one invocation.

    python -m bench.run                       # all shapes, worker + pycrdt + hocuspocus, 10 s each
    python -m bench.run --servers pycrdt,hocuspocus --duration 30
    python -m bench.run --server '{"name": "mine", "cmd": "...", "url": "ws://127.0.0.1:{port}/yjs"}'
    python -m bench.run --servers worker,worker-s3 --shapes rooms      # S3 (SeaweedFS) vs embedded
    python -m bench.run --servers worker-s3 --shapes sizing --duration 30   # operations.md sizing

Each (shape, server) pair gets a freshly started server, so no run inherits another's rooms or
heap. The load generators connect every client, then all start writing at one instant; the server's
CPU seconds are the /proc delta over exactly the measured window, its RSS is read at the window's
end. Results: a markdown table per shape and the raw figures as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import procstat
from bench.report import render, versions
from bench.stats import Histogram
from bench.target import DEFAULT_SERVERS, ROOT, SERVERS, ServerSpec, StartError, running
from bench.wire import Framing

NS = 1_000_000_000
GRACE_S = 2.0


@dataclass(frozen=True)
class Shape:
    key: str
    title: str
    rooms: int
    clients: int
    writers: int
    rate: float | None  # per writer; None: as fast as they can

    @property
    def idle(self) -> bool:
        return self.writers == 0

    def processes(self) -> list[list[str]]:
        """Load-generator processes: writers apart from readers, so receiving never delays a
        send; a shape of only writers (or only idle clients) is split in two shards."""
        if 0 < self.writers < self.clients:
            return [["--select", "writers"], ["--select", "readers"]]
        return [["--shard", "0/2"], ["--shard", "1/2"]]


SHAPES = {
    "fanout": Shape("fanout", "1 room x 50 clients, 1 writer at 50 updates/s", 1, 50, 1, 50),
    "rooms": Shape(
        "rooms", "200 rooms x 2 clients, 1 writer per room at 5 updates/s", 200, 2, 1, 5
    ),
    "max": Shape("max", "1 room x 10 writers, as fast as they can", 1, 10, 10, None),
    "idle": Shape("idle", "2,000 idle connections over 1,000 rooms", 1000, 2, 0, None),
    # The sizing figure in docs/operations.md: a session per room, one slow typist and one
    # reader each. Not in the default run (2,000 connections, and meant for `worker-s3`).
    "sizing": Shape(
        "sizing", "1,000 rooms x 2 clients, 1 writer per room at 1 update/s", 1000, 2, 1, 1
    ),
}
DEFAULT_SHAPES = ("fanout", "rooms", "max", "idle")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _event(process: asyncio.subprocess.Process, name: str, limit_s: float) -> dict[str, Any]:
    assert process.stdout is not None
    async with asyncio.timeout(limit_s):
        while line := await process.stdout.readline():
            message: dict[str, Any] = json.loads(line)
            if message.get("event") == name:
                return message
    raise RuntimeError(f"load generator exited (code {await process.wait()}) before {name!r}")


async def _loadgen(
    url: str,
    framing: Framing,
    shape: Shape,
    extra: list[str],
    duration: float,
    prefix: str,
    window: int,
) -> asyncio.subprocess.Process:
    args = [
        sys.executable, "-m", "bench.loadgen", "--coordinated",
        "--url", url, "--framing", framing.value,
        "--rooms", str(shape.rooms), "--clients", str(shape.clients),
        "--writers", str(shape.writers), "--rate", "max" if shape.rate is None else str(shape.rate),
        "--duration", str(duration), "--grace", str(GRACE_S), "--prefix", prefix,
        "--window", str(window), *extra,
    ]  # fmt: skip
    if shape.idle:
        args.append("--idle")
    return await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


@dataclass
class Window:
    """What one measured window produced."""

    results: list[dict[str, Any]]  # each load generator's "done" event
    cpu_s: dict[str, float]  # CPU seconds over exactly the window, per watched process tree
    rss: dict[str, int]  # RSS at the window's end, per watched process tree
    loadgen_cpu_pct: list[int]  # per load-generator process, 100 = one core
    loadgen_cpu_s: float = 0.0  # all load-generator processes together
    system_cpu_s: float = 0.0  # the whole machine's busy CPU seconds over the window
    probed: float | None = None  # the probe's increase over the window
    # CPU seconds per watched tree from before the first client to the last one synced
    connect_cpu_s: dict[str, float] = field(default_factory=dict)


async def drive(
    url: str,
    framing: Framing,
    shape: Shape,
    duration: float,
    window: int,
    prefix: str,
    watch: dict[str, int],
    extra: tuple[str, ...] = (),
    connected: Callable[[], Awaitable[None]] | None = None,
    probe: Callable[[], Awaitable[float]] | None = None,
) -> Window:
    """Connects the shape's load generators to `url`, runs one coordinated window and samples
    the process trees in `watch` (label: pid) from /proc at its start and end. `extra` goes to
    every load generator; `connected` runs once every client is connected, before the window;
    `probe` (a counter's value) is read at the window's start and end."""
    c0 = {k: procstat.sample(p) for k, p in watch.items()}
    procs = [
        await _loadgen(url, framing, shape, [*x, *extra], duration, prefix, window)
        for x in shape.processes()
    ]
    try:
        for p in procs:
            await _event(p, "connected", limit_s=180)
        c1 = {k: procstat.sample(p) for k, p in watch.items()}
        if connected is not None:
            await connected()
        await asyncio.sleep(2.0 if shape.idle else 1.0)
        start_ns = time.monotonic_ns() + NS // 3
        end_ns = start_ns + int(duration * NS)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(json.dumps({"start_ns": start_ns, "end_ns": end_ns}).encode() + b"\n")
            await p.stdin.drain()
        say(f"    connected; measuring {duration:g} s")
        await asyncio.sleep((start_ns - time.monotonic_ns()) / NS)
        m0, s0 = procstat.system_busy_seconds(), {k: procstat.sample(p) for k, p in watch.items()}
        g0 = [procstat.cpu_seconds(p.pid) for p in procs]
        p0 = await probe() if probe is not None else None
        await asyncio.sleep((end_ns - time.monotonic_ns()) / NS)
        p1 = await probe() if probe is not None else None
        m1, s1 = procstat.system_busy_seconds(), {k: procstat.sample(p) for k, p in watch.items()}
        g1 = [procstat.cpu_seconds(p.pid) for p in procs]
        results = [await _event(p, "done", limit_s=GRACE_S + 60) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()
    return Window(
        results=results,
        cpu_s={k: s1[k].cpu - s0[k].cpu for k in watch},
        connect_cpu_s={k: c1[k].cpu - c0[k].cpu for k in watch},
        rss={k: s1[k].rss for k in watch},
        loadgen_cpu_pct=[round(100 * (b - a) / duration) for a, b in zip(g0, g1, strict=True)],
        loadgen_cpu_s=sum(g1) - sum(g0),
        system_cpu_s=m1 - m0,
        probed=None if p0 is None or p1 is None else p1 - p0,
    )


_STORAGE_REQUESTS = re.compile(r"^collab_storage_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)


async def storage_requests(http: httpx.AsyncClient, url: str) -> float:
    """The worker's storage requests so far (every op and outcome), from its /metrics."""
    text = (await http.get(url)).text
    return sum(float(v) for v in _STORAGE_REQUESTS.findall(text))


async def measure(
    key: str,
    spec: ServerSpec,
    shape: Shape,
    duration: float,
    window: int,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": key, "name": spec.name, "shape": shape.key}
    prefix = f"b{int(time.time()) % 100000}-{shape.key}"
    # A connection per probe: one kept alive from the window's start met the server's 5 s
    # keep-alive timeout at a 5 s window's end ("Server disconnected without sending a response").
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with (
        running(spec, extra=extra) as server,
        httpx.AsyncClient(timeout=5, limits=no_reuse) as http,
    ):
        await asyncio.sleep(0.5)
        before = procstat.sample(server.pid)
        metrics = server.metrics
        measured = await drive(
            server.url,
            spec.framing,
            shape,
            duration,
            window,
            prefix,
            {"server": server.pid},
            probe=(lambda: storage_requests(http, metrics)) if metrics else None,
        )
    row.update(_aggregate(shape, duration, measured.results))
    cpu, rss = measured.cpu_s["server"], measured.rss["server"]
    delivered = row["delivered"]
    row.update(
        server_cpu_s=cpu,
        server_cpu_pct=100 * cpu / duration,
        # Everything the server did from before the first client connected until the last one
        # was synced: handshakes, session loads, ownership claims, first syncs.
        connect_cpu_s=measured.connect_cpu_s["server"],
        cpu_s_per_1k=1000 * cpu / delivered if delivered else None,
        rss_before_mb=before.rss / 2**20,
        rss_mb=rss / 2**20,
        rss_per_conn_kb=(rss - before.rss) / row["connections"] / 1024
        if row["connections"]
        else None,
        storage_requests_per_s=None if measured.probed is None else measured.probed / duration,
        loadgen_cpu_pct=measured.loadgen_cpu_pct,
        # The VM is shared: what the rest of the machine took over the window (100 = one core),
        # i.e. busy time minus the server's and the load generators'.
        other_cpu_pct=100
        * max(0.0, measured.system_cpu_s - cpu - measured.loadgen_cpu_s)
        / duration,
    )
    return row


def _aggregate(shape: Shape, duration: float, results: list[dict[str, Any]]) -> dict[str, Any]:
    hist = {k: Histogram() for k in ("latency_us", "open_us", "synced_us")}
    totals = {k: 0 for k in ("connected", "failed", "closed_early", "deflated", "sent", "skipped")}
    messages = {"messages_sent": 0, "messages_received": 0}
    delivered_window = delivered_total = 0
    echo: list[bool] = []
    errors: list[str] = []
    for r in results:
        for k, h in hist.items():
            h.merge(Histogram.from_json(r[k]))
        for k in totals:
            totals[k] += r[k]
        for k in messages:
            messages[k] += r.get(k, 0)
        delivered_window += r["delivered_window"]
        delivered_total += r["delivered_total"]
        if r["echo"] is not None:
            echo.append(r["echo"])
        errors += r["errors"]
    expected = totals["sent"] * (shape.clients - 1)

    def ms(h: Histogram, p: float) -> float | None:
        value = h.percentile(p)
        return None if value is None else value / 1000

    return {
        "connections": totals["connected"],
        "failed": totals["failed"],
        "closed_early": totals["closed_early"],
        "deflate": totals["deflated"] > 0,
        "sent": totals["sent"],
        "skipped": totals["skipped"],
        "sent_per_s": totals["sent"] / duration,
        "delivered": delivered_window,
        "delivered_per_s": delivered_window / duration,
        "delivery_ratio": delivered_total / expected if expected else None,
        "latency_p50_ms": ms(hist["latency_us"], 50),
        "latency_p99_ms": ms(hist["latency_us"], 99),
        "connect_p50_ms": ms(hist["synced_us"], 50),
        "connect_p99_ms": ms(hist["synced_us"], 99),
        "open_p50_ms": ms(hist["open_us"], 50),
        "open_p99_ms": ms(hist["open_us"], 99),
        "echo": all(echo) if echo else None,
        **messages,
        "errors": errors[:5],
    }


def _ensure_node_modules() -> None:
    js = ROOT / "tests" / "js"
    if not (js / "node_modules" / "@hocuspocus" / "server").is_dir():
        say("installing tests/js node packages (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=js, check=True, timeout=600)


@contextmanager
def s3_server(needed: bool, kind: str = "seaweedfs") -> Iterator[dict[str, str]]:
    """Template values for servers on S3: the real MinIO (or any S3) named by MINIO_TEST_* when
    set, else an S3 server started here as its own process (its CPU is not the server's):
    ``seaweedfs``, a real object store (tests/s3server.py), or ``moto``, the emulator the
    earlier figures in docs/benchmarks.md were measured on (its app on uvicorn, connections
    kept alive: tests/moto_keepalive.py; moto is not among the test extras)."""
    if not needed:
        yield {}
        return
    if os.environ.get("MINIO_TEST_ENDPOINT"):
        from tests.s3server import minio_test_kwargs

        yield _s3_values(minio_test_kwargs("unused"))
        return
    if kind == "moto":
        from tests.moto_keepalive import start_moto_server

        say("starting an S3 server (moto, keep-alive)")
        with start_moto_server() as kwargs:
            yield _s3_values(kwargs)
        return
    from tests.s3server import start_s3_server

    say("starting an S3 server (SeaweedFS)")
    with start_s3_server() as s3:
        yield _s3_values(s3.store_kwargs("unused"))


def _s3_values(kwargs: dict[str, Any]) -> dict[str, str]:
    return {
        "s3_endpoint": str(kwargs["endpoint"]),
        "s3_port": str(kwargs["port"]),
        "s3_access_key": str(kwargs["access_key"]),
        "s3_secret_key": str(kwargs["secret_key"]),
        "s3_secure": str(kwargs["secure"]).lower(),
    }


async def run(
    servers: dict[str, ServerSpec],
    shapes: list[Shape],
    duration: float,
    window: int,
    extra: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    total, done = len(servers) * len(shapes), 0
    for shape in shapes:
        for key, spec in servers.items():
            done += 1
            say(f"[{done}/{total}] {shape.title} x {spec.name}")
            try:
                row = await measure(key, spec, shape, duration, window, extra)
            except (StartError, RuntimeError, TimeoutError) as exc:
                say(f"    FAILED: {exc}")
                rows.append(
                    {"server": key, "name": spec.name, "shape": shape.key, "error": str(exc)}
                )
                continue
            say(
                f"    {row['delivered_per_s']:.0f} delivered/s,"
                f" p99 {row['latency_p99_ms'] or 0:.1f} ms,"
                f" server CPU {row['server_cpu_pct']:.0f}%, RSS {row['rss_mb']:.0f} MB,"
                f" loadgen CPU {row['loadgen_cpu_pct']}%, other CPU {row['other_cpu_pct']:.0f}%"
            )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help=f"of {', '.join(SERVERS)}")
    p.add_argument("--server", action="append", default=[], help="an extra server, as JSON")
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help=f"of {', '.join(SHAPES)}")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per shape")
    p.add_argument("--window", type=int, default=8, help="in-flight updates per max-rate writer")
    p.add_argument("--s3", default="seaweedfs", choices=("seaweedfs", "moto"), help="S3 server")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = p.parse_args(argv)

    servers = {k: SERVERS[k] for k in a.servers.split(",") if k}
    for text in a.server:
        spec = ServerSpec.from_json(text)
        servers[spec.name] = spec
    shapes = [SHAPES[k] for k in a.shapes.split(",") if k]
    if any(s.framing.value == "hocuspocus" for s in servers.values()):
        _ensure_node_modules()

    started = datetime.now(UTC)
    with s3_server(any(s.needs_s3 for s in servers.values()), a.s3) as extra:
        rows = asyncio.run(run(servers, shapes, a.duration, a.window, extra))
    meta = {
        "started": started.isoformat(),
        "duration_s": a.duration,
        "window": a.window,
        "s3": a.s3,
        **versions(),
    }
    meta["servers"] = {k: {"name": s.name, "cmd": s.cmd} for k, s in servers.items()}
    markdown = render(meta, rows, shapes=list(shapes))

    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / started.strftime("%Y%m%d-%H%M%S")
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    say(f"wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    main()
