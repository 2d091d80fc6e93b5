"""The readable table of ``python -m bench.trace``: one row per figure, one column per server."""

from __future__ import annotations

from typing import Any

MB = 2**20


def _mb(value: int | None) -> str:
    return "—" if value is None else f"{value / MB:,.0f} MB"


def _size(value: int) -> str:
    if value >= MB:
        return f"{value / MB:,.1f} MB"
    return f"{value / 1024:,.1f} KB"


def _s(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1000:,.2f} s" if ms < 10_000 else f"{ms / 1000:,.1f} s"


def _yes(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "NO")


def _stored(stored: dict[str, Any] | None, encoded: int | None) -> list[str]:
    if stored is None:
        return ["—"]
    b, n = stored["bytes"], stored["objects"]
    lines = [
        f"{kind} {_size(b[kind])} ({n[kind]})" for kind in ("updates", "snapshots", "log", "other")
    ]
    if encoded:
        doc = (b["updates"] + b["snapshots"]) / encoded
        lines.append(f"updates+snapshots {doc:,.1f}x, all {stored['total'] / encoded:,.1f}x")
    return lines


def _fresh(row: dict[str, Any], key: str) -> str:
    fresh = row.get(key)
    if fresh is None:
        return "—"
    if not fresh.get("exact"):
        return f"NOT EXACT ({fresh.get('error', '?')})"
    return _s(fresh["sync_ms"])


def figures(row: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(label, lines) pairs for one server's row."""
    replay = row.get("replay_ms")
    rate = f"{row['keystrokes'] / (replay / 1000):,.0f}/s" if replay else "—"
    encoded = row.get("encoded_bytes")
    out = [
        ("replay time", [_s(replay)]),
        ("keystrokes per second", [rate]),
        ("text exact: typist / watcher",
         [f"{_yes(row.get('exact_typist'))} / {_yes(row.get('exact_watcher'))}"]),
        ("server RSS: start / peak / end of typing",
         [f"{_mb(row.get('rss_start'))} / {_mb(row.get('rss_peak'))} / {_mb(row.get('rss_end'))}"]),
        ("encoded document (Y.encodeStateAsUpdate)", [_size(encoded) if encoded else "—"]),
        ("fresh client sync, session live", [_fresh(row, "fresh_live")]),
    ]  # fmt: skip
    cpu = row.get("cpu_s") or {}
    out.append(
        (
            "CPU s while typing: server / router / clients",
            [
                " / ".join(
                    f"{cpu[k]:,.1f}" if k in cpu else "—" for k in ("server", "router", "clients")
                )
            ],
        )
    )
    if "other_cpu_pct" in row:
        out.append(("other processes' CPU while typing", [f"{row['other_cpu_pct']:,.0f} %"]))
    collab = row["server"] == "collab"
    memory = "— (in memory)"
    restarted = f"{_mb(row.get('rss_restarted'))} / {_mb(row.get('rss_after_load'))}"
    out += [
        ("stored 3 s after the last keystroke (objects)",
         _stored(row.get("stored_live"), encoded) if collab else [memory]),
        ("fresh client sync after SIGKILL + restart (cold load)",
         [_fresh(row, "fresh_cold") if collab else memory]),
        ("worker RSS: restarted / after the cold load",
         [restarted if collab else memory]),
        ("stored once the session left the worker",
         _stored(row.get("stored_unloaded"), encoded) if collab else [memory]),
        ("  ... left by the idle unload (compacts)",
         [_yes(row.get("idle_unload")) if collab else memory]),
    ]  # fmt: skip
    if row.get("worker_log"):
        events = sorted(row["worker_log"].items())
        out.append(("worker log: warnings, errors, unloads", [f"{k} x{n}" for k, n in events]))
    if "error" in row:
        out.append(("FAILED", [row["error"].splitlines()[0][:200]]))
    return out


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    names = {"collab": "router + worker", "reference": "@y/websocket-server"}
    columns = [dict(figures(row)) for row in rows]
    labels: list[str] = []
    for column in columns:
        labels += [label for label in column if label not in labels]
    heads = [names.get(row["server"], row["server"]) for row in rows]
    table: list[list[str]] = [["", *heads]]
    for label in labels:
        cells = [column.get(label, ["—"]) for column in columns]
        for i in range(max(len(c) for c in cells)):
            table.append([label if i == 0 else "", *(c[i] if i < len(c) else "" for c in cells)])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [
        f"trace {meta['trace']}: {meta['keystrokes']:,} transactions, {meta['end_chars']:,}"
        f" characters, typed {meta['times']}x into one session; worker storage: {meta['storage']}",
        "",
    ]
    for r in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
