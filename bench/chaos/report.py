"""The run's verdict: which guarantee broke, the table, the JSON object, the exit code (pure)."""

from __future__ import annotations

import json
from typing import Any

# Counts that must be 0 (DESIGN §10b: "non-zero exit when a guarantee broke").
MUST_BE_ZERO = ("lost", "missing_tokens", "duplicated_tokens", "diverged_files", "stuck_clients")
KEYS = (
    "faults",
    "acked",
    "lost",
    "missing_tokens",
    "duplicated_tokens",
    "diverged_files",
    "max_live_owners",
    "stuck_clients",
    "recovery_s",
)
BROKEN = 1  # a guarantee broke
NOT_RUN = 2  # the run could not be carried out (set-up, workload, checker)


def failures(report: dict[str, Any]) -> list[str]:
    """Every reason the run failed, one phrase each; empty when it passed."""
    if report.get("error"):
        return [str(report["error"])]
    found = [f"{key} = {report[key]}" for key in MUST_BE_ZERO if report.get(key)]
    if (report.get("max_live_owners") or 0) > 1:
        found.append(f"max_live_owners = {report['max_live_owners']} (at most 1)")
    for exit_ in report.get("unexpected_exits", []):
        found.append(f"{exit_['process']} exited by itself (code {exit_['code']})")
    if report.get("workload_exit") not in (0, None):
        found.append(f"the workload exited with {report['workload_exit']}")
    return found


def exit_code(report: dict[str, Any]) -> int:
    if report.get("error"):
        return NOT_RUN
    return BROKEN if failures(report) else 0


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, default=str)


def table(report: dict[str, Any]) -> str:
    lines = [
        f"chaos run: seed {report.get('seed')}, {report.get('duration_s')} s, "
        f"{report.get('mode')}; run directory {report.get('run_dir')}"
    ]
    faults = report.get("faults") or {}
    total = sum(faults.values())
    listed = ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())) or "none"
    lines.append(f"  {'faults':<20} {total} ({listed})")
    for key in KEYS[1:-1]:
        if key in report:
            mark = "  <-- broken" if _broken(key, report[key]) else ""
            lines.append(f"  {key:<20} {report[key]}{mark}")
    recovery = report.get("recovery_s") or {}
    if recovery:
        lines.append(
            f"  {'recovery_s':<20} p50 {recovery.get('p50')}  p99 {recovery.get('p99')}  "
            f"max {recovery.get('max')}  (faults that affected a client: {recovery.get('n')})"
        )
    exits = report.get("unexpected_exits") or []
    lines.append(
        f"  {'unexpected exits':<20} "
        + (", ".join(f"{e['process']} ({e['code']})" for e in exits) if exits else "none")
    )
    lines.append(f"  {'wall time':<20} {report.get('wall_s')} s")
    details = report.get("details") or {}
    for key in (*MUST_BE_ZERO, "max_live_owners"):
        if key in details:
            lines.append(f"  {key}: {json.dumps(details[key], default=str)[:800]}")
    reasons = failures(report)
    lines.append("result: OK" if not reasons else "result: FAILED: " + "; ".join(reasons))
    return "\n".join(lines)


def _broken(key: str, value: Any) -> bool:
    if key in MUST_BE_ZERO:
        return bool(value)
    return key == "max_live_owners" and (value or 0) > 1
