"""Our router against nginx: the same y-websocket load direct, through the router, through nginx.

    python -m bench.router                              # fanout + rooms, 10 s per pair
    python -m bench.router --shapes rooms --targets direct,router --duration 30 --rounds 3
    python -m bench.router --handshakes 1000 --targets router --rounds 3   # connection set-up
    valgrind --tool=callgrind python -m bench.router --in-process 100     # instructions, see below

Every (shape, target) pair runs on freshly started processes, all on 127.0.0.1: two workers
(`python -m worker`, WORKER_ID w-0 and w-1) and, for the proxied targets, one proxy in front of
them:

- `direct`: no proxy; each client connects straight to the worker that owns its room's session,
  placed as the router places it (`router.ring.owner`, the load generator's `--route`). The same
  rooms land on the same workers as through the router, so (router - direct) is the router's
  own latency.
- `router`: `python -m router` with WORKERS=<both workers>.
- `nginx`: nginx 1 worker process, `hash $request_uri consistent` over both workers, WebSocket
  proxying (bench/nginx.py; the Debian package, installed by hand for the benchmark only).

Measured per pair, over exactly one window (bench/run.py's `drive`): delivered updates/s and
fan-out latency from the load generators; CPU seconds of the proxy's process tree (nginx: master
and worker) and of each worker from /proc. *Relayed messages* are the WebSocket data messages
the load generators sent plus those they received inside the window: each passes the proxy once.
*Added* latency is (percentile through the proxy) - (the same percentile direct), same round.
With `--rounds N` every pair runs N times (interleaved) and the summary takes medians.

`--handshakes N` measures what the shapes leave out, the proxy's work per *connection*: N
y-websocket connections (path routing) and N JSON connections (join routing) opened one after
the other, each until its first message from the worker, then closed; proxy CPU per connection,
less its idle rate (health checks) over the same time.

`--in-process N` is for instruction counts, which CPU time on a shared VM is too noisy to
compare: a router (asyncio, no health round after the first), a stand-in worker that answers
every upgrade with a 101 and one frame, and N connections of each protocol, all in this one
process. Under `valgrind --tool=callgrind`, (instructions at N - at 0) / 2N is the work of
one connection: the router's, plus the same client and stand-in work for every router version.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import httpx
import websockets
from websockets.uri import parse_uri

from bench import nginx, procstat
from bench.report import _f, _pair, versions
from bench.run import SHAPES, Shape, _aggregate, drive, say
from bench.target import ROOT, Running, ServerSpec, StartError, running
from bench.wire import Framing
from router.ring import owner
from router.server import run_router
from router.settings import RouterSettings

TARGETS = ("direct", "router", "nginx")
TITLES = {"direct": "direct to the worker", "router": "collab router", "nginx": "nginx"}
DEFAULT_SHAPES = ("fanout", "rooms")
WORKERS = ("w-0", "w-1")
ADMIN_TOKEN = "bench-router"
IDLE_S = 2.0

# What the report holds the router to, against nginx on the same load.
TARGET_ADDED_P99 = 1.5  # router added p99 <= 1.5 x nginx added p99
TARGET_CPU_PER_MESSAGE = 3.0  # router CPU per relayed message <= 3 x nginx's


def worker_spec(name: str) -> ServerSpec:
    return ServerSpec(
        name=f"collab worker {name}",
        cmd="{python} -m worker",
        url="ws://127.0.0.1:{port}/yjs",
        framing=Framing.YWS,
        env={
            "PORT": "{port}",
            "WORKER_ID": name,
            "COLLAB_HOST": "127.0.0.1",
            "STORAGE_DIR": "{tmpdir}/storage",
            "WORKSPACE_DIR": "{tmpdir}/ws",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "LOG_FORMAT": "json",
        },
        ready="http://127.0.0.1:{port}/readyz",
    )


ROUTER_CMD = "{python} -m router"


def proxy_spec(
    target: str,
    upstreams: str,
    router_env: tuple[tuple[str, str], ...] = (),
    router_cmd: str = ROUTER_CMD,
) -> ServerSpec:
    """The router or nginx in front of `upstreams` (host:port,host:port). `router_env` adds to
    (or overrides) the router's environment and `router_cmd` replaces its command, for
    diagnostics (another checkout: `{python} -P -m router` with PYTHONPATH=<its root>)."""
    if target == "router":
        return ServerSpec(
            name=TITLES[target],
            cmd=router_cmd,
            url="ws://127.0.0.1:{port}/yjs",
            framing=Framing.YWS,
            env={
                "PORT": "{port}",
                "WORKERS": upstreams,
                "COLLAB_HOST": "127.0.0.1",
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "LOG_FORMAT": "json",
                "ROUTER_ID": "bench-router",
                **dict(router_env),
            },
            ready="http://127.0.0.1:{port}/readyz",
        )
    if target == "nginx":
        return ServerSpec(
            name=TITLES[target],
            cmd="{python} -m bench.nginx --port {port} --dir {tmpdir}/nginx --upstreams "
            + upstreams,
            url="ws://127.0.0.1:{port}/yjs",
            framing=Framing.YWS,
        )
    raise ValueError(f"no proxy for target {target!r}")


def port_of(server: Running) -> int:
    return parse_uri(server.url).port


# --- arithmetic (pure; tests/test_bench_router.py) ---------------------------------------------


def relayed_messages(row: dict[str, Any]) -> int:
    """WebSocket data messages through the proxy in the window: every message a client sent
    (client -> proxy -> worker) plus every message a client received (worker -> proxy -> client);
    each crosses the proxy exactly once."""
    return int(row["messages_sent"]) + int(row["messages_received"])


def cpu_per_1k(cpu_s: float, messages: int) -> float | None:
    """CPU seconds per 1,000 messages."""
    return 1000 * cpu_s / messages if messages else None


def added(proxied: float | None, direct: float | None) -> float | None:
    """Latency the proxy adds at one percentile: proxied minus direct, same rooms and load."""
    return None if proxied is None or direct is None else proxied - direct


def ratio(router: float | None, reference: float | None) -> float | None:
    """router / reference, when both are positive (an added latency at or below zero is noise
    around nothing and has no meaningful ratio)."""
    if router is None or reference is None or reference <= 0 or router < 0:
        return None
    return router / reference


def placement(prefix: str, rooms: int, workers: Iterable[str] = WORKERS) -> dict[str, int]:
    """Rooms per worker under the router's rendezvous placement."""
    names = tuple(workers)
    counts = dict.fromkeys(names, 0)
    for room in range(rooms):
        name = owner(f"{prefix}-{room}", names)
        assert name is not None
        counts[name] += 1
    return counts


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# --- profile ---------------------------------------------------------------------------------


async def start_profile(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    """py-spy sampling `pid` for `seconds`, collapsed stacks (by function) into `out`, its own
    messages into `out`.log. Native frames (uvloop, the C parts of asyncio) need py-spy to pause
    the process for each sample, which is why a profiled run's figures are not comparable."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)),
            "--rate", "200", "--format", "raw", "--function", "--native", "--output", str(out),
            stdout=log, stderr=log,
        )  # fmt: skip


IDLE_FRAMES = ("epoll_wait", "epoll_pwait")  # native sampling sees the loop's wait as busy


def hot_spots(collapsed: str, top: int = 15) -> dict[str, Any]:
    """From py-spy's raw output (`frame;frame;... count` per line): busy samples (the innermost
    frame not the event loop's epoll wait) and each function's share of them, as the innermost
    frame (self, native or Python) and anywhere on the stack (inclusive: Python functions only,
    without the loop's trunk that is on nearly every stack)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = busy = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        if frames[-1].startswith(IDLE_FRAMES):
            continue
        busy += n
        own[frames[-1]] += n
        for name in set(frames):
            anywhere[name] += n
    trunk = {name for name, n in anywhere.items() if n >= 0.95 * busy}
    branches = Counter(
        {name: n for name, n in anywhere.items() if name not in trunk and ".py:" in name}
    )
    return {
        "samples": total,
        "busy": busy,
        "self": [(name, n / busy) for name, n in own.most_common(top)],
        "inclusive": [(name, n / busy) for name, n in branches.most_common(top)],
    }


# --- one pair --------------------------------------------------------------------------------


async def _admin_get(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def _router_ring(http: httpx.AsyncClient, port: int, limit_s: float = 10) -> None:
    """Until both workers are on the router's ring (its placement is then the one we mirror)."""
    deadline = time.monotonic() + limit_s
    while True:
        body = await _admin_get(http, f"http://127.0.0.1:{port}/admin/workers")
        on = sorted(w["id"] for w in body["workers"] if w.get("onRing"))
        if on == sorted(WORKERS):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"router ring has {on}, expected {sorted(WORKERS)}")
        await asyncio.sleep(0.2)


async def _live(http: httpx.AsyncClient, ports: dict[str, int], prefix: str) -> dict[str, Any]:
    """Sessions and clients of this pair on each worker, from its admin API."""
    rooms, clients = {}, {}
    for name, port in ports.items():
        body = await _admin_get(http, f"http://127.0.0.1:{port}/admin/sessions")
        mine = [s for s in body["sessions"] if str(s["sessionId"]).startswith(f"{prefix}-")]
        rooms[name] = len(mine)
        clients[name] = sum(int(s["clients"]) for s in mine)
    return {"rooms": rooms, "clients": clients}


async def measure(
    shape: Shape, target: str, round_: int, prefix: str, options: Options
) -> dict[str, Any]:
    """One pair on fresh processes. `prefix` names the rooms: the same for every target of a
    round, so that direct and router clients of a room meet the same worker."""
    profile, duration = options.profile, options.duration
    row: dict[str, Any] = {
        "shape": shape.key,
        "target": target,
        "name": TITLES[target],
        "round": round_,
    }
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5, trust_env=False))
        workers = [await stack.enter_async_context(running(worker_spec(n))) for n in WORKERS]
        ports = {name: port_of(w) for name, w in zip(WORKERS, workers, strict=True)}
        watch = {name: w.pid for name, w in zip(WORKERS, workers, strict=True)}
        upstreams = ",".join(f"127.0.0.1:{p}" for p in ports.values())
        extra: tuple[str, ...] = ()
        if target == "direct":
            url = workers[0].url
            for name, w in zip(WORKERS, workers, strict=True):
                extra += ("--route", f"{name}={w.url}")
        else:
            spec = proxy_spec(target, upstreams, options.router_env, options.router_cmd)
            proxy = await stack.enter_async_context(running(spec))
            if target == "router":
                await _router_ring(http, port_of(proxy))
            url = proxy.url
            watch["proxy"] = proxy.pid
        await asyncio.sleep(0.5)
        idle0 = procstat.sample(watch["proxy"]).cpu if "proxy" in watch else 0.0
        await asyncio.sleep(IDLE_S)
        idle1 = procstat.sample(watch["proxy"]).cpu if "proxy" in watch else 0.0
        live: dict[str, Any] = {}

        spy: asyncio.subprocess.Process | None = None
        spy_out = profile / f"{shape.key}-{target}-r{round_ + 1}.txt" if profile else None

        async def connected() -> None:
            nonlocal spy
            live.update(await _live(http, ports, prefix))
            if spy_out is not None and "proxy" in watch and target == "router":
                # From here to past the window's end (it starts ~1.3 s after this).
                spy = await start_profile(watch["proxy"], duration + 2, spy_out)

        measured = await drive(
            url, Framing.YWS, shape, duration, options.window, prefix, watch, extra, connected
        )
        if spy is not None:
            async with asyncio.timeout(30):
                await spy.wait()
            assert spy_out is not None
            if spy_out.exists():
                row["profile"] = {"file": str(spy_out), **hot_spots(spy_out.read_text())}
    row.update(_aggregate(shape, duration, measured.results))
    relayed = relayed_messages(row)
    workers_cpu = {name: measured.cpu_s[name] for name in WORKERS}
    row.update(
        placement=live.get("rooms"),
        placement_clients=live.get("clients"),
        expected_placement=placement(prefix, shape.rooms) if target != "nginx" else None,
        relayed=relayed,
        relayed_per_s=relayed / duration,
        worker_cpu_s=workers_cpu,
        worker_cpu_pct=100 * sum(workers_cpu.values()) / duration,
        worker_cpu_s_per_1k_delivered=cpu_per_1k(sum(workers_cpu.values()), row["delivered"]),
        loadgen_cpu_pct=measured.loadgen_cpu_pct,
        # Everything else the machine did meanwhile (other processes, the kernel's loopback
        # work not charged to ours): 100 = one of its cores. High values mean a noisy window.
        other_cpu_pct=100
        * (measured.system_cpu_s - sum(measured.cpu_s.values()) - measured.loadgen_cpu_s)
        / duration,
    )
    if "proxy" in watch:
        cpu = measured.cpu_s["proxy"]
        row.update(
            proxy_cpu_s=cpu,
            proxy_cpu_pct=100 * cpu / duration,
            proxy_cpu_s_per_1k=cpu_per_1k(cpu, relayed),
            proxy_idle_cpu_pct=100 * (idle1 - idle0) / IDLE_S,
            proxy_rss_mb=measured.rss["proxy"] / 2**20,
        )
    if row["expected_placement"] is not None and row["placement"] != row["expected_placement"]:
        row["errors"] = [
            *row["errors"],
            f"rooms per worker {row['placement']} != ring placement {row['expected_placement']}",
        ]
    return row


@dataclass(frozen=True)
class Quiet:
    """How the run keeps out of other work on the machine (a shared VM: someone's test suite
    running meanwhile shows up as *other CPU*)."""

    max_other_pct: float = 25.0  # a pair measured with more other CPU than this is repeated
    attempts: int = 3  # at most this many times per pair; the least disturbed one is kept
    wait_s: float = 300.0  # before each attempt, wait at most this long for a quiet machine


@dataclass(frozen=True)
class Options:
    """How every pair of one invocation is measured."""

    duration: float = 10.0  # measured seconds per pair
    window: int = 8  # in-flight updates per max-rate writer (bench/run.py)
    quiet: Quiet = Quiet()
    profile: Path | None = None  # py-spy output directory (router pairs)
    router_env: tuple[tuple[str, str], ...] = ()
    router_cmd: str = ROUTER_CMD


async def wait_quiet(quiet: Quiet) -> float:
    """Until the machine (nothing of ours runs now) is busy below `max_other_pct` over one
    second, for at most `wait_s`; returns that last busy share (100 = one core)."""
    started = time.monotonic()
    next_note = 0.0
    while True:
        before = procstat.system_busy_seconds()
        await asyncio.sleep(1.0)
        busy = 100 * (procstat.system_busy_seconds() - before)
        waited = time.monotonic() - started
        if busy <= quiet.max_other_pct or waited > quiet.wait_s:
            if waited > 2:
                say(f"    waited {waited:.0f} s for other work ({busy:.0f}% of a core now)")
            return busy
        if waited >= next_note:
            say(f"    machine busy ({busy:.0f}% of a core elsewhere); waiting")
            next_note = waited + 10


async def run(
    shapes: list[Shape], targets: list[str], rounds: int, options: Options
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    total, done = rounds * len(shapes) * len(targets), 0
    run_id = int(time.time()) % 100000
    for round_ in range(rounds):
        for shape in shapes:
            prefix = f"r{run_id}-{round_}-{shape.key}"
            for target in targets:
                done += 1
                say(f"[{done}/{total}] {shape.title} x {TITLES[target]} (round {round_ + 1})")
                row = await measure_pair(shape, target, round_, prefix, options)
                rows.append(row)
    _add_deltas(rows)
    return rows


async def measure_pair(
    shape: Shape, target: str, round_: int, prefix: str, options: Options
) -> dict[str, Any]:
    """One pair, measured again (up to `quiet.attempts`) while other work disturbed it."""
    kept: dict[str, Any] | None = None
    quiet = options.quiet
    for attempt in range(1, quiet.attempts + 1):
        await wait_quiet(quiet)
        try:
            row = await measure(shape, target, round_, prefix, options)
        except (StartError, RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            say(f"    FAILED: {exc}")
            error = {"shape": shape.key, "target": target, "name": TITLES[target]}
            return {**error, "round": round_, "error": str(exc)}
        row["attempt"] = attempt
        say(
            f"    {row['delivered_per_s']:.0f} delivered/s,"
            f" p50 {row['latency_p50_ms'] or 0:.2f} p99 {row['latency_p99_ms'] or 0:.2f} ms,"
            f" {row['relayed_per_s']:.0f} msg/s, proxy CPU {row.get('proxy_cpu_pct', 0):.0f}%,"
            f" workers {row['worker_cpu_pct']:.0f}%, loadgen {row['loadgen_cpu_pct']}%,"
            f" other {row['other_cpu_pct']:.0f}%, rooms {row['placement']}"
        )
        if kept is None or row["other_cpu_pct"] < kept["other_cpu_pct"]:
            kept = row
        if row["other_cpu_pct"] <= quiet.max_other_pct:
            break
        say(f"    disturbed (other CPU {row['other_cpu_pct']:.0f}%)")
    assert kept is not None
    kept["disturbed"] = kept["other_cpu_pct"] > quiet.max_other_pct
    return kept


def _add_deltas(rows: list[dict[str, Any]]) -> None:
    """Added latency of each proxied row against the direct row of its shape and round."""
    direct = {
        (r["shape"], r["round"]): r for r in rows if r["target"] == "direct" and "error" not in r
    }
    for r in rows:
        base = direct.get((r["shape"], r["round"]))
        if r["target"] == "direct" or "error" in r or base is None:
            continue
        for p in ("p50", "p99"):
            r[f"added_{p}_ms"] = added(r[f"latency_{p}_ms"], base[f"latency_{p}_ms"])


SUMMARY_KEYS = (
    "delivered_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "added_p50_ms",
    "added_p99_ms",
    "relayed_per_s",
    "proxy_cpu_pct",
    "proxy_cpu_s_per_1k",
    "proxy_idle_cpu_pct",
    "worker_cpu_pct",
    "delivery_ratio",
    "other_cpu_pct",
)


SPREAD_KEYS = ("latency_p99_ms", "added_p50_ms", "added_p99_ms", "proxy_cpu_s_per_1k")


def summarize(
    rows: list[dict[str, Any]], shapes: list[Shape], targets: list[str]
) -> dict[str, Any]:
    """Per shape: the median of each figure over rounds, per target, and the router/nginx
    ratios with the verdict against the targets."""
    out: dict[str, Any] = {}
    for shape in shapes:
        per: dict[str, Any] = {}
        for target in targets:
            mine = [
                r
                for r in rows
                if r["shape"] == shape.key and r["target"] == target and "error" not in r
            ]
            if not mine:
                continue
            per[target] = {k: median(r.get(k) for r in mine) for k in SUMMARY_KEYS}
            per[target]["rounds"] = len(mine)
            for k in SPREAD_KEYS:
                values = [r[k] for r in mine if r.get(k) is not None]
                per[target][f"{k}_range"] = [min(values), max(values)] if values else None
        router, ref = per.get("router", {}), per.get("nginx", {})
        p99 = ratio(router.get("added_p99_ms"), ref.get("added_p99_ms"))
        cpu = ratio(router.get("proxy_cpu_s_per_1k"), ref.get("proxy_cpu_s_per_1k"))
        out[shape.key] = {
            "targets": per,
            "router_vs_nginx": {
                "added_p99": p99,
                "cpu_per_message": cpu,
                "added_p99_met": None if p99 is None else p99 <= TARGET_ADDED_P99,
                "cpu_per_message_met": None if cpu is None else cpu <= TARGET_CPU_PER_MESSAGE,
            },
        }
    return out


# --- handshakes ----------------------------------------------------------------------------------

HANDSHAKE_ROOMS = 50
PROTOCOLS = ("yjs", "json")


async def _connection(base: str, protocol: str, i: int) -> None:
    """One client's whole connection: handshake, routing, the worker's first message, close."""
    room = f"hs-{i % HANDSHAKE_ROOMS}"
    url = f"{base}/yjs/{room}/a.txt" if protocol == "yjs" else f"{base}/"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        if protocol == "json":
            await ws.send(json.dumps({"type": "join", "sessionId": room, "userId": "bench"}))
        await asyncio.wait_for(ws.recv(), 10)


async def measure_handshakes(
    target: str, protocol: str, count: int, round_: int, options: Options
) -> dict[str, Any]:
    """`count` connections in a row through a fresh proxy; its CPU per connection."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5, trust_env=False))
        workers = [await stack.enter_async_context(running(worker_spec(n))) for n in WORKERS]
        upstreams = ",".join(f"127.0.0.1:{port_of(w)}" for w in workers)
        spec = proxy_spec(target, upstreams, options.router_env, options.router_cmd)
        proxy = await stack.enter_async_context(running(spec))
        if target == "router":
            await _router_ring(http, port_of(proxy))
        base = f"ws://127.0.0.1:{port_of(proxy)}"
        for i in range(HANDSHAKE_ROOMS):  # every session loaded once: the workers' part is warm
            await _connection(base, protocol, i)
        await asyncio.sleep(0.5)
        idle0 = procstat.sample(proxy.pid).cpu
        await asyncio.sleep(IDLE_S)
        idle1 = procstat.sample(proxy.pid).cpu
        busy0, started = procstat.system_busy_seconds(), time.monotonic()
        cpu0 = procstat.sample(proxy.pid).cpu
        for i in range(count):
            await _connection(base, protocol, i)
        cpu1, seconds = procstat.sample(proxy.pid).cpu, time.monotonic() - started
        busy = procstat.system_busy_seconds() - busy0
    idle_rate = (idle1 - idle0) / IDLE_S
    return {
        "target": target,
        "name": TITLES[target],
        "protocol": protocol,
        "round": round_,
        "connections": count,
        "seconds": seconds,
        "connections_per_s": count / seconds,
        "proxy_cpu_s": cpu1 - cpu0,
        "proxy_idle_cpu_pct": 100 * idle_rate,
        "proxy_cpu_us_per_connection": 1e6 * (cpu1 - cpu0 - idle_rate * seconds) / count,
        "machine_busy_pct": 100 * busy / seconds,
    }


async def run_handshakes(
    targets: list[str], count: int, rounds: int, options: Options
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    proxies = [t for t in targets if t != "direct"]
    total = rounds * len(proxies) * len(PROTOCOLS)
    for round_ in range(rounds):
        for target in proxies:
            for protocol in PROTOCOLS:
                say(f"[{len(rows) + 1}/{total}] {count} {protocol} connections x {TITLES[target]}")
                await wait_quiet(options.quiet)
                row = await measure_handshakes(target, protocol, count, round_, options)
                say(
                    f"    {row['connections_per_s']:.0f} connections/s, proxy"
                    f" {row['proxy_cpu_us_per_connection']:.0f} us CPU per connection,"
                    f" machine busy {row['machine_busy_pct']:.0f}%"
                )
                rows.append(row)
    return rows


async def _stand_in_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if head.startswith(b"GET /readyz "):
        body = b'{"state": "ready", "worker": "w-0"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    else:
        key = next(
            line.partition(b":")[2].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + base64.b64encode(digest) + b"\r\nserver: uvicorn\r\n\r\n"
            b"\x82\x03\x00\x00\x00"  # what a worker sends first: y-websocket sync step 1
        )
        while await reader.read(65536):
            pass
    writer.close()


IN_PROCESS_UPGRADE = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"User-Agent: Python/3.11 websockets/17.4\r\n\r\n"
)


async def in_process(count: int) -> None:
    """`count` connections per protocol through a router in this process (see the docstring)."""
    server = await asyncio.start_server(_stand_in_worker, "127.0.0.1", 0)
    worker = ("127.0.0.1", server.sockets[0].getsockname()[1])
    settings = RouterSettings(
        host="127.0.0.1", port=0, workers=(worker,), health_interval_ms=600_000
    )
    join = json.dumps({"type": "join", "sessionId": "s", "userId": "u"}).encode()
    join_frame = bytes([0x81, 0x80 | len(join)]) + b"\0\0\0\0" + join  # masked with zeros
    async with anyio.create_task_group() as tg:
        router = await tg.start(lambda task_status: run_router(settings, task_status=task_status))
        for path in ("/yjs/s/a.txt", "/"):
            for _ in range(count):
                reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
                writer.write(IN_PROCESS_UPGRADE % path.encode())
                await reader.readuntil(b"\r\n\r\n")
                if path == "/":
                    writer.write(join_frame)
                await reader.readexactly(5)
                writer.close()
                await writer.wait_closed()
        tg.cancel_scope.cancel()
    server.close()


def summarize_handshakes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target and protocol: the median CPU per connection over rounds, and its range."""
    out: dict[str, Any] = {}
    for key in sorted({(r["target"], r["protocol"]) for r in rows}):
        values = [
            r["proxy_cpu_us_per_connection"] for r in rows if (r["target"], r["protocol"]) == key
        ]
        out[f"{key[0]} {key[1]}"] = {
            "proxy_cpu_us_per_connection": median(values),
            "range": [min(values), max(values)],
            "rounds": len(values),
        }
    return out


def render_handshakes(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    out = [
        f"# Router handshake benchmark {meta['started'][:19]}Z",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['cpu']}; Python {meta['python']}, uvloop {meta['uvloop']}, nginx "
        f"{meta['nginx']}. Repository at {meta['commit']}"
        f"{' + uncommitted router/ changes' if meta['router_dirty'] else ''}. Each row: two "
        "fresh workers and a fresh proxy; one client opens the connections one after the "
        "other, each until the worker's first message (y-websocket: sync step 1; JSON: the "
        "answer to its join), then closes it. *Proxy CPU per connection*: the proxy's CPU "
        "over the run less its idle rate (measured for 2 s before) over the same time, per "
        "connection. *Machine busy*: all cores, 100% = one.",
        "",
        "| target | protocol | round | connections/s | proxy CPU per connection | proxy idle "
        "| machine busy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['name']} | {r['protocol']} | {r['round'] + 1} | {_f(r['connections_per_s'], 0)} "
            f"| {_f(r['proxy_cpu_us_per_connection'], 0)} us | {_f(r['proxy_idle_cpu_pct'], 1)}% "
            f"| {_f(r['machine_busy_pct'], 0)}% |"
        )
    out += ["", "Medians over rounds (min - max):", ""]
    for key, m in summarize_handshakes(rows).items():
        low, high = m["range"]
        out.append(
            f"- {key}: {_f(m['proxy_cpu_us_per_connection'], 0)} us per connection "
            f"({_f(low, 0)} - {_f(high, 0)}, {m['rounds']} rounds)"
        )
    return "\n".join(out) + "\n"


# --- report ------------------------------------------------------------------------------------


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return f"met (<= {limit:g}x)" if value <= limit else f"missed by {value / limit:.2f}x"


def render(meta: dict[str, Any], rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    out = [
        f"# Router benchmark {meta['started'][:19]}Z",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['cpu']}; Python {meta['python']}, uvicorn {meta['uvicorn']}, websockets "
        f"{meta['websockets']}, uvloop {meta['uvloop']}, nginx {meta['nginx']}. Repository at "
        f"{meta['commit']}{' + uncommitted router/ changes' if meta['router_dirty'] else ''}. "
        f"{meta['duration_s']:g} s measured per pair, {meta['rounds']} round(s), each pair on "
        "freshly started processes, all on 127.0.0.1."
        + (f" Router environment added: `{meta['router_env']}`." if meta["router_env"] else "")
        + (f" Router command: `{meta['router_cmd']}`." if meta["router_cmd"] != ROUTER_CMD else ""),
        "",
        "- Two workers (`python -m worker`, w-0 and w-1, persistence on) behind each proxy. "
        "*direct*: each client connects to the worker that owns its room under the router's "
        "placement (`router.ring.owner`); *router*: `python -m router`; *nginx*: 1 worker "
        "process, `hash $request_uri consistent` (bench/nginx.py). *rooms w-0/w-1*: rooms live "
        "on each worker, read from the workers' admin API once all clients were connected.",
        "- *Added* p50 / p99: the target's fan-out percentile minus the direct one of the same "
        "shape and round.",
        "- *Relayed msg/s*: WebSocket data messages the load generators sent plus those they "
        "received inside the window (each crosses the proxy once). *Proxy CPU per 1k msgs*: the "
        "proxy's CPU seconds over the window (router process; nginx master + worker) per 1,000 "
        "of them. *idle*: proxy CPU before any client connected (router: its health checks).",
        "- *Worker CPU*: both workers together, for context (100% = one core). *Other CPU*: the "
        "machine's busy CPU (/proc/stat) minus workers, proxy and load generators over the "
        "window: other processes and kernel work charged to none of them; a high value marks "
        "a disturbed window. A pair with more than "
        f"{meta['max_other_cpu_pct']:g}% was measured again (at most {meta['attempts']} "
        "attempts, the least disturbed kept; *round* says which attempt, a `!` one still "
        "disturbed).",
    ]
    by_shape = {s: [r for r in rows if r["shape"] == s] for s in summary}
    for key, s in summary.items():
        out += ["", f"## {SHAPES[key].title}", ""]
        head = (
            "| target | round | rooms w-0/w-1 | delivered upd/s | fan-out p50 / p99 ms "
            "| added p50 / p99 ms | relayed msg/s | proxy CPU (idle) | proxy CPU s per 1k msgs "
            "| worker CPU | delivered / expected | loadgen CPU % | other CPU |"
        )
        out += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in by_shape[key]:
            if "error" in r:
                error = r["error"].splitlines()[0]
                out.append(f"| {r['name']} | {r['round'] + 1} | failed: {error} |")
                continue
            rooms = "/".join(str(v) for v in (r["placement"] or {}).values()) or "-"
            proxy = (
                f"{_f(r['proxy_cpu_pct'], 0)}% ({_f(r['proxy_idle_cpu_pct'], 1)}%)"
                if "proxy_cpu_pct" in r
                else "-"
            )
            attempt = f"{r['round'] + 1}" + (
                f" (attempt {r['attempt']}{' !' if r['disturbed'] else ''})"
                if r["attempt"] > 1 or r["disturbed"]
                else ""
            )
            out.append(
                f"| {r['name']} | {attempt} | {rooms} | {_f(r['delivered_per_s'], 0)} "
                f"| {_pair(r['latency_p50_ms'], r['latency_p99_ms'], 2)} "
                f"| {_pair(r.get('added_p50_ms'), r.get('added_p99_ms'), 2)} "
                f"| {_f(r['relayed_per_s'], 0)} | {proxy} | {_f(r.get('proxy_cpu_s_per_1k'), 4)} "
                f"| {_f(r['worker_cpu_pct'], 0)}% | {_f(r['delivery_ratio'], 3)} "
                f"| {' + '.join(str(x) for x in r['loadgen_cpu_pct'])} "
                f"| {_f(r['other_cpu_pct'], 0)}% |"
            )
            for error in r.get("errors", []):
                out.append(f"|  |  | error: {error} |")
        if meta["rounds"] > 1:
            out += ["", f"Medians over {meta['rounds']} rounds (min - max in brackets):", ""]
            out += _median_table(s["targets"])
        v = s["router_vs_nginx"]
        out += [
            "",
            f"Router / nginx{' (medians over rounds)' if meta['rounds'] > 1 else ''}: added p99 "
            f"**{_x(v['added_p99'])}** (target <= {TARGET_ADDED_P99:g}x: "
            f"{_verdict(v['added_p99'], TARGET_ADDED_P99)}), CPU per relayed message "
            f"**{_x(v['cpu_per_message'])}** (target <= {TARGET_CPU_PER_MESSAGE:g}x: "
            f"{_verdict(v['cpu_per_message'], TARGET_CPU_PER_MESSAGE)}).",
        ]
    profiled = [r for r in rows if r.get("profile")]
    if profiled:
        out += _profile_section(profiled)
    return "\n".join(out) + "\n"


def _range(values: list[float] | None, digits: int) -> str:
    return "" if not values else f" [{_f(values[0], digits)} - {_f(values[1], digits)}]"


def _median_table(per: dict[str, Any]) -> list[str]:
    head = (
        "| target | rounds | delivered upd/s | fan-out p50 / p99 ms | added p50 / p99 ms "
        "| proxy CPU | proxy CPU s per 1k msgs | worker CPU |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for target, m in per.items():
        proxy = "-" if m["proxy_cpu_pct"] is None else f"{_f(m['proxy_cpu_pct'], 1)}%"
        lines.append(
            f"| {TITLES[target]} | {m['rounds']} | {_f(m['delivered_per_s'], 0)} "
            f"| {_pair(m['latency_p50_ms'], m['latency_p99_ms'], 2)}"
            f"{_range(m['latency_p99_ms_range'], 2)} "
            f"| {_pair(m['added_p50_ms'], m['added_p99_ms'], 2)}"
            f"{_range(m['added_p99_ms_range'], 2)} "
            f"| {proxy} | {_f(m['proxy_cpu_s_per_1k'], 4)}"
            f"{_range(m['proxy_cpu_s_per_1k_range'], 4)} "
            f"| {_f(m['worker_cpu_pct'], 0)}% |"
        )
    return lines


def _profile_section(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "",
        "## Router profile (py-spy, this run's figures are not for comparison)",
        "",
        "Share of the router's busy samples (samples not waiting in epoll), by function: as the "
        "innermost frame (self, native frames included: `--native`, py-spy pauses the router "
        "per sample) and anywhere on the stack (inclusive: Python functions, without the event "
        "loop's trunk).",
    ]
    for r in rows:
        prof = r["profile"]
        out += [
            "",
            f"### {SHAPES[r['shape']].title}, round {r['round'] + 1}: {prof['busy']} busy of "
            f"{prof['samples']} samples, `{prof['file']}`",
            "",
            "| self | function | | inclusive | function |",
            "|---|---|---|---|---|",
        ]
        for (a, fa), (b, fb) in zip(prof["self"], prof["inclusive"], strict=False):
            out.append(f"| {100 * fa:.1f}% | `{a}` | | {100 * fb:.1f}% | `{b}` |")
    return out


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help=f"of {', '.join(SHAPES)}")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"of {', '.join(TARGETS)}")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per pair")
    p.add_argument("--rounds", type=int, default=1, help="times to run every pair (medians)")
    p.add_argument("--window", type=int, default=8, help="in-flight updates per max-rate writer")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--profile",
        type=Path,
        help="sample the router with py-spy over each window, stacks into this directory "
        "(the sampling costs the router CPU: such a run's figures are not comparable)",
    )
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=Quiet.max_other_pct,
        help="%% of a core other work may take during a window before the pair is repeated",
    )
    p.add_argument("--attempts", type=int, default=Quiet.attempts, help="per pair, at most")
    p.add_argument(
        "--router-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the router (diagnostics, e.g. HEALTH_INTERVAL_MS=60000)",
    )
    p.add_argument(
        "--router-cmd",
        default=ROUTER_CMD,
        help="the router's command template (diagnostics; default: %(default)s)",
    )
    p.add_argument(
        "--handshakes",
        type=int,
        default=0,
        metavar="N",
        help="instead of the shapes: N connections in a row per protocol, proxy CPU per connection",
    )
    p.add_argument(
        "--in-process",
        type=int,
        default=None,
        metavar="N",
        help="N connections per protocol through a router in this process (run under callgrind)",
    )
    a = p.parse_args(argv)
    if a.in_process is not None:
        asyncio.run(in_process(a.in_process))
        return
    router_env = tuple((k, v) for k, _, v in (x.partition("=") for x in a.router_env))
    shapes = [SHAPES[k] for k in a.shapes.split(",") if k]
    targets = [t for t in a.targets.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or a.rounds < 1 or any(s.idle for s in shapes):
        p.error(f"targets are {', '.join(TARGETS)}; rounds >= 1; shapes with writers only")
    if "nginx" in targets and nginx.version() == "-":
        p.error("nginx is not installed: apt-get install -y nginx (for the benchmark only)")

    started = datetime.now(UTC)
    quiet = Quiet(max_other_pct=a.max_other_cpu, attempts=max(1, a.attempts))
    options = Options(a.duration, a.window, quiet, a.profile, router_env, a.router_cmd)

    async def main_task() -> list[dict[str, Any]]:
        # SIGTERM (and SIGINT, which a shell's background job ignores) stop the run cleanly:
        # every process it started is stopped by the context managers on the way out.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        if a.handshakes:
            return await run_handshakes(targets, a.handshakes, a.rounds, options)
        return await run(shapes, targets, a.rounds, options)

    rows = asyncio.run(main_task())
    meta = {
        "started": started.isoformat(),
        "command": shlex.join(
            ["python", "-m", "bench.router", *(sys.argv[1:] if argv is None else argv)]
        ),
        "duration_s": a.duration,
        "rounds": a.rounds,
        "window": a.window,
        **versions(),
        "uvloop": _version("uvloop"),
        "nginx": nginx.version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "router_dirty": bool(_git("status", "--porcelain", "--", "router")),
        "profiled": a.profile is not None,
        "max_other_cpu_pct": quiet.max_other_pct,
        "attempts": quiet.attempts,
        "router_env": dict(router_env),
        "router_cmd": a.router_cmd,
    }
    if a.handshakes:
        summary = summarize_handshakes(rows)
        markdown = render_handshakes(meta, rows)
    else:
        summary = summarize(rows, shapes, targets)
        markdown = render(meta, rows, summary)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / started.strftime("%Y%m%d-%H%M%S" + ("-handshakes" if a.handshakes else ""))
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=2)
    )
    stem.with_suffix(".md").write_text(markdown)
    print(markdown)
    say(f"wrote {stem}.md and {stem}.json")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


if __name__ == "__main__":
    main()
