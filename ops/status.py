"""`collab status` as one screen of text, from the router's ``/admin/status``."""

from __future__ import annotations

from typing import Any

from .display import table

WORKER_COLUMNS = (
    ("id", "WORKER"),
    ("state", "STATE"),
    ("sessions", "SESSIONS"),
    ("connections", "CONNECTIONS"),
    ("storage", "STORAGE"),
    ("unflushed", "UNFLUSHED"),
    ("oldest", "OLDEST UNFLUSHED"),
    ("loopLag", "LOOP LAG"),
    ("note", "NOTE"),
)

COMMIT_COLUMNS = (
    ("at", "AT"),
    ("worker", "WORKER"),
    ("sessionId", "SESSION"),
    ("outcome", "OUTCOME"),
    ("commit", "COMMIT"),
    ("author", "AUTHOR"),
    ("changed", "FILES"),
)


def render_status(body: dict[str, Any], url: str) -> str:
    router, totals = body["router"], body["totals"]
    counts = totals["workers"]
    states = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"
    lines = [
        f"router   {router['id']} at {url}: {'ready' if router['ready'] else 'NOT READY'}, "
        f"{router['connections']} connections relayed, client auth "
        f"{'on' if router['authRequired'] else 'OFF (no AUTH_SECRET)'}",
        f"workers  {states}",
        f"sessions {totals['sessions']} live, {totals['connections']} connections",
        f"storage  {_storage(totals)}",
        f"flush    {_bytes(totals['unflushedBytes'])} not yet in storage, oldest "
        f"{totals['maxUnflushedAgeSeconds']:.1f} s",
        "",
        table([_worker_row(w) for w in body["workers"]], WORKER_COLUMNS),
    ]
    commits = body.get("recentCommits", [])
    lines.append("")
    if commits:
        rows = [{**c, "commit": (c.get("commit") or "")[:10] or c.get("error")} for c in commits]
        lines.append("last commits")
        lines.append(table(rows, COMMIT_COLUMNS))
    else:
        lines.append("last commits: none since the workers started")
    return "\n".join(lines)


def _worker_row(row: dict[str, Any]) -> dict[str, Any]:
    status = row.get("status", {})
    drain = status.get("drain", {})
    note = row.get("statusError") or row.get("error") or status.get("storageError")
    if row.get("state") == "draining" and drain:
        note = f"{len(drain.get('sessionsLeft', []))} sessions left to move"
    age = row.get("unflushedAgeSeconds")
    lag = status.get("eventLoopLagSeconds")
    return {
        "id": row.get("id"),
        "state": row.get("state"),
        "sessions": row.get("sessions"),
        "connections": row.get("connections"),
        "storage": row.get("storage"),
        "unflushed": None if row.get("unflushedBytes") is None else _bytes(row["unflushedBytes"]),
        "oldest": None if age is None else f"{age:.1f} s",
        "loopLag": None if lag is None else f"{lag * 1000:.0f} ms",
        "note": note,
    }


def _storage(totals: dict[str, Any]) -> str:
    down = totals["storageUnavailable"]
    if not down:
        return "ok on every worker"
    return f"UNAVAILABLE on {', '.join(down)} (edits held in memory; see the worker logs)"


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"
