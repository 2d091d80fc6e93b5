"""The chaos run's independent checker: what the clients and storage say, against each other.

    python -m bench.chaos.checker RUN_DIR [--s3-endpoint H --s3-port P --s3-bucket B
        --s3-access-key K --s3-secret-key S [--s3-secure]] [--owner-bound S] [--json]

It shares no code with the worker, the router, the contract or the operator commands (a test
proves it imports none of them): it reads the clients' histories (``RUN_DIR/clients/*.jsonl``,
bench/chaos/workload.py documents them), ``owners.jsonl``, ``faults.jsonl`` and the sessions'
objects in storage, with its own reader (bench/chaos/stored.py). The counts:

``acked``
    JSON operations acknowledged (``ack`` events).
``lost``
    acknowledged operations whose token is missing from their file's final text in storage or
    in any client that reported the file.
``missing_tokens``
    editors' inserted tokens missing from the file's final text in storage or in any client.
``duplicated_tokens``
    tokens found more than once in any one final text (clients' or storage's).
``diverged_files``
    files whose final texts (every client that reported it, and storage) are not all equal.
``max_live_owners``
    bench/chaos/owners.py: the most workers listing one session live at once for longer than
    ``owner_bound_s``.
``stuck_clients``
    clients without a ``final``, or whose final says not connected or not synced.
``recovery_s``
    bench/chaos/recovery.py: per fault, from its heal until every client it affected edits
    again; p50, p99 and max over the faults that affected a client.

``details`` names the tokens, files, sessions, clients and faults behind every non-zero count
(lists are cut at ``DETAIL_LIMIT`` rows, with the total beside them). Storage may lag the
clients by a flush interval when the cluster is still up, so a read that disagrees with the
clients is repeated for up to ``storage_wait_s`` before it counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos.owners import live_owners
from bench.chaos.recovery import recovery
from bench.chaos.report import KEYS
from bench.chaos.stored import S3Config, S3Reader, StorageError, read_session

DETAIL_LIMIT = 200
STORAGE = "storage"
TOKEN_OPEN, TOKEN_CLOSE = "<", ">"


@dataclass
class ClientRun:
    """One client's history, as read back."""

    client: str
    kind: str
    session: str
    events: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0

    @property
    def final(self) -> dict[str, Any] | None:
        finals = [e for e in self.events if e.get("ev") == "final"]
        return finals[-1] if finals else None


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The objects of a JSON-lines file, and how many lines were not one (a cut last line)."""
    if not path.exists():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_clients(run_dir: Path) -> dict[str, ClientRun]:
    runs: dict[str, ClientRun] = {}
    for path in sorted((run_dir / "clients").glob("*.jsonl")):
        rows, bad = read_jsonl(path)
        if not rows:
            continue
        first = rows[0]
        run = ClientRun(str(first["client"]), str(first["kind"]), str(first["session"]))
        run.events = sorted(rows, key=lambda e: float(e["t"]))
        run.malformed = bad
        runs[run.client] = run
    return runs


def tokens(text: str) -> list[str]:
    """Every ``<...>`` token of a text, in order, repeats kept."""
    found = []
    start = text.find(TOKEN_OPEN)
    while start != -1:
        end = text.find(TOKEN_CLOSE, start)
        if end == -1:
            break
        inner = text[start + 1 : end]
        if inner and TOKEN_OPEN not in inner and not any(c.isspace() for c in inner):
            found.append(text[start : end + 1])
            start = text.find(TOKEN_OPEN, end)
        else:
            start = text.find(TOKEN_OPEN, start + 1)
    return found


FileKey = tuple[str, str]  # (session, path)


def final_texts(runs: dict[str, ClientRun]) -> dict[FileKey, dict[str, str | None]]:
    """(session, path) → {client: its final text of the file (None: it had no such file)}."""
    texts: dict[FileKey, dict[str, str | None]] = {}
    for run in runs.values():
        final = run.final
        for path, text in ((final or {}).get("files") or {}).items():
            texts.setdefault((run.session, path), {})[run.client] = text
    return texts


def read_storage(
    config: S3Config,
    sessions: set[str],
    expected: dict[FileKey, dict[str, str | None]],
    wait_s: float,
) -> tuple[dict[FileKey, str | None], dict[str, Any]]:
    """Each file's stored text; re-read (up to ``wait_s``) while it differs from the clients'
    or storage fails to answer (the last failure is raised once the time is up)."""
    deadline = time.monotonic() + wait_s
    reads = 0
    with S3Reader(config) as reader:
        while True:
            reads += 1
            stored: dict[FileKey, str | None] = {}
            objects = 0
            try:
                for session in sorted(sessions):
                    state = read_session(reader, session)
                    objects += state.objects
                    for path, text in state.texts.items():
                        stored[(session, path)] = text
            except StorageError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
                continue
            pending = [
                key
                for key, views in expected.items()
                if any(v is not None and v != stored.get(key) for v in views.values())
            ]
            if not pending or time.monotonic() >= deadline:
                return stored, {"reads": reads, "objects": objects, "sessions": len(sessions)}
            time.sleep(1.0)


def _cut(rows: list[Any]) -> dict[str, Any]:
    return {"total": len(rows), "rows": rows[:DETAIL_LIMIT]}


def check(
    run_dir: Path,
    *,
    s3: dict[str, Any] | None,
    owner_bound_s: float,
    storage_wait_s: float = 15.0,
    window_s: float = 5.0,
    stall_s: float = 2.0,
) -> dict[str, Any]:
    """The report for one run directory (keys: see the module docstring)."""
    run_dir = Path(run_dir)
    runs = read_clients(run_dir)
    faults, bad_faults = read_jsonl(run_dir / "faults.jsonl")
    samples, bad_samples = read_jsonl(run_dir / "owners.jsonl")
    details: dict[str, Any] = {}

    texts = final_texts(runs)
    storage_info: dict[str, Any] = {"checked": s3 is not None}
    stored: dict[FileKey, str | None] = {}
    if s3 is not None:
        sessions = {run.session for run in runs.values()}
        try:
            stored, info = read_storage(S3Config.from_dict(s3), sessions, texts, storage_wait_s)
            storage_info.update(info)
        except StorageError as exc:
            storage_info["error"] = str(exc)
    storage_ok = s3 is None or "error" not in storage_info
    if s3 is not None and storage_ok:  # storage is one more view of every file a client has
        for key in list(texts) + [k for k in stored if k not in texts]:
            texts.setdefault(key, {})[STORAGE] = stored.get(key)

    # Each view's tokens, found once: a long run has many tokens and long texts.
    found = {
        key: {source: set(tokens(text or "")) for source, text in views.items()}
        for key, views in texts.items()
    }

    def absent_from(key: FileKey, token: str) -> list[str]:
        return sorted(source for source, have in found.get(key, {}).items() if token not in have)

    # Acknowledged JSON operations and editors' inserts, checked against every final view.
    acked = lost = 0
    lost_rows: list[dict[str, Any]] = []
    unverified: list[dict[str, Any]] = []
    missing_rows: list[dict[str, Any]] = []
    for run in runs.values():
        for e in run.events:
            if e.get("ev") not in ("ack", "insert"):
                continue
            key = (run.session, str(e["path"]))
            row = {"client": run.client, "session": run.session, "path": key[1]}
            row["token"] = e["token"]
            if not texts.get(key):
                if e["ev"] == "ack":
                    acked += 1
                unverified.append(row | {"why": "no final text of this file anywhere"})
                continue
            where = absent_from(key, str(e["token"]))
            if e["ev"] == "ack":
                acked += 1
                if where:
                    lost += 1
                    lost_rows.append(
                        row | {"req": e.get("req"), "op": e.get("op"), "missing_in": where}
                    )
            elif where:
                missing_rows.append(row | {"missing_in": where})

    duplicated: dict[str, list[str]] = {}
    diverged_rows: list[dict[str, Any]] = []
    for (session, path), views in sorted(texts.items()):
        for source, text in views.items():
            for token, n in Counter(tokens(text or "")).items():
                if n > 1:
                    duplicated.setdefault(token, []).append(f"{session}/{path} in {source} x{n}")
        distinct = set(views.values())
        if len(distinct) > 1:
            diverged_rows.append(_divergence(session, path, views))

    stuck_rows = []
    for run in sorted(runs.values(), key=lambda r: r.client):
        why = _stuck(run)
        if why:
            stuck_rows.append({"client": run.client, "session": run.session, "why": why})

    injected = [f for f in faults if not (f.get("detail") or {}).get("error")]
    failed = [f for f in faults if (f.get("detail") or {}).get("error")]
    owners = live_owners(samples, owner_bound_s)
    run_end = max((float(e["t"]) for r in runs.values() for e in r.events), default=0.0)
    recovered = recovery(
        injected,
        {r.client: (r.kind, r.events) for r in runs.values()},
        run_end=run_end,
        window_s=window_s,
        stall_s=stall_s,
    )

    report: dict[str, Any] = {
        "faults": dict(sorted(Counter(str(f.get("kind")) for f in injected).items())),
        "acked": acked,
        "lost": lost,
        "missing_tokens": len(missing_rows),
        "duplicated_tokens": len(duplicated),
        "diverged_files": len(diverged_rows),
        "max_live_owners": owners["max_live_owners"],
        "stuck_clients": len(stuck_rows),
        "recovery_s": recovered["figures"],
    }
    report["ok"] = bool(
        storage_ok
        and runs
        and not (lost or missing_rows or duplicated or diverged_rows or stuck_rows)
        and owners["max_live_owners"] <= 1
    )
    if lost_rows:
        details["lost"] = _cut(lost_rows)
    if missing_rows:
        details["missing_tokens"] = _cut(missing_rows)
    if duplicated:
        details["duplicated_tokens"] = _cut(
            [{"token": t, "where": w} for t, w in duplicated.items()]
        )
    if diverged_rows:
        details["diverged_files"] = _cut(diverged_rows)
    if owners["episodes"] or owners["short_overlaps"]:
        details["max_live_owners"] = {
            "owner_bound_s": owner_bound_s,
            "episodes": _cut(owners["episodes"]),
            "short_overlaps": owners["short_overlaps"],
        }
    if stuck_rows:
        details["stuck_clients"] = _cut(stuck_rows)
    if unverified:
        details["unverified"] = _cut(unverified)
    if failed:
        details["faults_not_injected"] = _cut(failed)
    details["recovery"] = _cut(recovered["faults"])
    details["storage"] = storage_info
    details["inputs"] = {
        "clients": len(runs),
        "kinds": dict(Counter(r.kind for r in runs.values())),
        "inserts": sum(1 for r in runs.values() for e in r.events if e.get("ev") == "insert"),
        "files": len(texts),
        "faults": len(faults),
        "owner_samples": len(samples),
        "malformed_lines": sum(r.malformed for r in runs.values()) + bad_faults + bad_samples,
    }
    if not runs:
        details["inputs"]["error"] = f"no client history under {run_dir / 'clients'}"
    report["details"] = details
    return report


def _stuck(run: ClientRun) -> str | None:
    final = run.final
    if final is None:
        return "no final state (the workload ended before writing it)"
    if not final.get("connected") or not final.get("synced"):
        return f"at the end: connected={final.get('connected')}, synced={final.get('synced')}"
    states = [e["ev"] for e in run.events if e.get("ev") in ("connected", "disconnected", "synced")]
    if not states or states[-1] != "synced":
        return f"its last connection event is {states[-1] if states else 'none'}, not synced"
    return None


def _divergence(session: str, path: str, views: dict[str, str | None]) -> dict[str, Any]:
    """Which views agree, and the tokens that only some of them have."""
    groups: dict[str | None, list[str]] = {}
    for source, text in sorted(views.items()):
        groups.setdefault(text, []).append(source)
    every = [set(tokens(text or "")) for text in views.values()]
    union = set().union(*every)
    common = set.intersection(*every) if every else set()
    return {
        "session": session,
        "path": path,
        "groups": [
            {"sources": sources, "length": None if text is None else len(text)}
            for text, sources in groups.items()
        ],
        "tokens_not_everywhere": sorted(union - common)[:50],
        "same_tokens_other_order": union == common,
    }


def _s3_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.s3_endpoint:
        return None
    return {
        "endpoint": args.s3_endpoint,
        "port": args.s3_port,
        "bucket": args.s3_bucket,
        "access_key": args.s3_access_key,
        "secret_key": args.s3_secret_key,
        "secure": args.s3_secure,
    }


def summary(report: dict[str, Any]) -> str:
    lines = [f"{key:<18} {report[key] or 'none'}" for key in KEYS]
    for key, value in report["details"].items():
        if key in ("recovery", "inputs", "storage"):
            continue
        lines.append(f"  {key}: {json.dumps(value)[:600]}")
    lines.append(f"storage            {report['details']['storage']}")
    lines.append("OK" if report["ok"] else "FAILED: a guarantee broke (details above)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos.checker", description=__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--s3-endpoint")
    p.add_argument("--s3-port", type=int, default=9000)
    p.add_argument("--s3-bucket", default="sessions")
    p.add_argument("--s3-access-key", default="")
    p.add_argument("--s3-secret-key", default="")
    p.add_argument("--s3-secure", action="store_true")
    p.add_argument("--owner-bound", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--storage-wait", type=float, default=15.0)
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args(argv)
    if not (args.run_dir / "clients").is_dir():
        p.error(f"{args.run_dir} has no clients/ directory")
    report = check(
        args.run_dir,
        s3=_s3_from_args(args),
        owner_bound_s=args.owner_bound,
        storage_wait_s=args.storage_wait,
    )
    print(json.dumps(report) if args.json else summary(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
