"""The benchmark's markdown: one table per shape, ratios against the two reference servers."""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.target import ROOT

if TYPE_CHECKING:
    from bench.run import Shape

BASELINES = (
    ("pycrdt", "x pycrdt-websocket"),
    ("hocuspocus", "x Hocuspocus"),
    ("worker", "x collab worker"),
)


def versions() -> dict[str, str]:
    def py(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "-"

    def npm(name: str) -> str:
        path = ROOT / "tests" / "js" / "node_modules" / name / "package.json"
        return json.loads(path.read_text())["version"] if path.exists() else "-"

    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        node = "-"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "node": node,
        "pycrdt": py("pycrdt"),
        "pycrdt-websocket": py("pycrdt-websocket"),
        "uvicorn": py("uvicorn"),
        "websockets": py("websockets"),
        "@hocuspocus/server": npm("@hocuspocus/server"),
    }


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{_f(a, digits)} / {_f(b, digits)}"


def _yes(flag: bool) -> str:
    return "accepted" if flag else "off"


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def _table(
    rows: list[dict[str, Any]],
    metric: str,
    head: tuple[str, str],
    cells: Callable[[dict[str, Any], str], str],
) -> list[str]:
    """One markdown table: ``head`` is (columns before, columns after) the baseline ratios of
    ``metric``; ``cells(row, ratios)`` renders one server's row."""
    base = {r["server"]: r.get(metric) for r in rows}
    line = f"{head[0]} | " + " | ".join(label for _, label in BASELINES) + f" | {head[1]}"
    lines = [line, "|" + "---|" * (line.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'].splitlines()[0]} |")
            continue
        ratios = " | ".join(_ratio(r[metric], base.get(k)) for k, _ in BASELINES)
        lines.append(cells(r, ratios))
    return lines


def _active_table(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        "| server | clients | delivered upd/s | fan-out p50 / p99 ms | connect p50 / p99 ms "
        "| server CPU | CPU s per 1k delivered",
        "RSS MB | storage req/s | delivered / expected | deflate | loadgen CPU % | other CPU % |",
    )

    def cells(r: dict[str, Any], ratios: str) -> str:
        return (
            f"| {r['name']} | {r['connections']} | {_f(r['delivered_per_s'], 0)} "
            f"| {_pair(r['latency_p50_ms'], r['latency_p99_ms'])} "
            f"| {_pair(r['connect_p50_ms'], r['connect_p99_ms'])} "
            f"| {_f(r['server_cpu_pct'], 0)}% | {_f(r['cpu_s_per_1k'], 3)} | {ratios} "
            f"| {_f(r['rss_mb'], 0)} | {_f(r.get('storage_requests_per_s'), 0)} "
            f"| {_f(r['delivery_ratio'], 3)} | {_yes(r['deflate'])} "
            f"| {' + '.join(str(x) for x in r['loadgen_cpu_pct'])} "
            f"| {_f(r.get('other_cpu_pct'), 0)} |"
        )

    return _table(rows, "cpu_s_per_1k", head, cells)


def _idle_table(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        "| server | connections | connect p50 / p99 ms | connect-phase CPU s "
        "| RSS before -> after MB "
        "| KB per connection",
        "server CPU while idle | deflate | other CPU % |",
    )

    def cells(r: dict[str, Any], ratios: str) -> str:
        return (
            f"| {r['name']} | {r['connections']} "
            f"| {_pair(r['connect_p50_ms'], r['connect_p99_ms'])} "
            f"| {_f(r.get('connect_cpu_s'), 2)} "
            f"| {_f(r['rss_before_mb'], 0)} -> {_f(r['rss_mb'], 0)} "
            f"| {_f(r['rss_per_conn_kb'], 1)} | {ratios} | {_f(r['server_cpu_pct'], 1)}% "
            f"| {_yes(r['deflate'])} | {_f(r.get('other_cpu_pct'), 0)} |"
        )

    return _table(rows, "rss_per_conn_kb", head, cells)


def render(meta: dict[str, Any], rows: list[dict[str, Any]], shapes: list[Shape]) -> str:
    out = [
        f"# Benchmark {meta['started'][:19]}Z",
        "",
        f"{meta['cpu']}; Python {meta['python']}, Node {meta['node']}; pycrdt {meta['pycrdt']}, "
        f"pycrdt-websocket {meta['pycrdt-websocket']}, uvicorn {meta['uvicorn']}, "
        f"@hocuspocus/server {meta['@hocuspocus/server']}. {meta['duration_s']:g} s measured "
        "per shape, each on a freshly started server, all on 127.0.0.1.",
        "",
        "- Clients offer permessage-deflate, as browsers and Node `ws` do; the *deflate* column "
        "says whether the server accepted it. The bare pycrdt-websocket server is run with "
        "`ws_per_message_deflate=False` (uvicorn's default would accept it); Hocuspocus's `ws` "
        "server has it off by default.",
        "- *Connect*: TCP + WebSocket handshake + (Hocuspocus: auth) until the server's sync "
        "step 2 arrives, at most 64 handshakes in flight per load-generator process.",
        "- *Delivered*: updates received by a client other than their writer during the window "
        "(a merged update counts once per update in it); *fan-out*: writer's send to that "
        "receipt. *delivered / expected* counts until 2 s after the window; below 1 means loss "
        "or a backlog.",
        "- *CPU* and *RSS*: the server's process tree, from /proc; CPU is the delta over the "
        "measured window, RSS its value at the window's end (idle: minus the RSS of the freshly "
        "started server, per connection).",
        f"- Max-rate writers keep {meta['window']} updates in flight each, until a client has "
        "received them. Writers and readers run in separate load-generator processes; their CPU "
        "is the *loadgen CPU* column (100 = one core).",
        "- *Other CPU*: the rest of the machine over the window (busy time from /proc/stat "
        "minus the server's and the load generators'; 100 = one core): the VM is shared, so a "
        "window with much of it is suspect.",
    ]
    for shape in shapes:
        mine = [r for r in rows if r["shape"] == shape.key]
        out += ["", f"## {shape.title}", ""]
        out += _idle_table(mine) if shape.idle else _active_table(mine)
    return "\n".join(out) + "\n"
