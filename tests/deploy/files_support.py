"""Helpers of the deployment-file tests: paths, .dockerignore matching, PromQL metric names.

Nothing here talks to a network or a Docker engine.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import RouterMetrics
from worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SWARM = ROOT / "swarm.yml"
DASHBOARD = ROOT / "charts" / "collab" / "files" / "dashboards" / "collab.json"
ALERTS = ROOT / "charts" / "collab" / "files" / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

# The series names PromQL can see, per family type (prometheus_client also exports *_created,
# which no dashboard should use).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def series_names(page: str) -> frozenset[str]:
    """Every series name a /metrics page can produce, whether or not it has samples yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(page):
        if family.name.endswith("_created"):
            continue  # prometheus_client's creation timestamps, typed as gauges of their own
        suffixes = SERIES_SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return frozenset(names)


def family_names(page: str) -> frozenset[str]:
    """Histogram names as docs write them: ``collab_flush_seconds`` for its three series."""
    families = text_string_to_metric_families(page)
    return frozenset(f.name for f in families if f.type in ("histogram", "summary"))


# What the code exports, read from its own metric declarations (not a copied list); the live
# /metrics of running processes are checked in test_metric_names.py.
WORKER_METRICS = series_names(generate_latest(WorkerMetrics().registry).decode())
ROUTER_METRICS = series_names(generate_latest(RouterMetrics().registry).decode())
KNOWN_METRICS = WORKER_METRICS | ROUTER_METRICS


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------- PromQL


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects (raises on a syntax error)."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def label_names(expr: str) -> set[str]:
    """Every label an expression matches on, groups by or joins on."""
    labels: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels.update(m.name for m in node.matchers.matchers)
        modifier = getattr(node, "modifier", None)
        labels.update(getattr(modifier, "labels", None) or [])
        matching = getattr(modifier, "matching", None)
        labels.update(getattr(matching, "labels", None) or [])
        labels.update(getattr(modifier, "group_labels", None) or [])

    promql_parser.walk(promql_parser.parse(expr), visit)
    return labels


def squash(text: str) -> str:
    """PromQL without whitespace, for comparing queries written with different spacing."""
    return re.sub(r"\s+", "", text)


def duration(text: str | int | float) -> timedelta:
    """A Go/Compose/Prometheus duration ("30s", "1m30s", "2m") as a timedelta."""
    if isinstance(text, int | float):
        return timedelta(seconds=text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))


# ------------------------------------------------------------------------------- docs


def operations_text() -> str:
    return OPERATIONS.read_text(encoding="utf-8")


def dashboard_section() -> str:
    """docs/operations.md's "Read the dashboards" section."""
    text = operations_text()
    start = text.index("## Read the dashboards")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def documented_queries() -> list[str]:
    """The backticked queries of the "query" column of the dashboards table."""
    queries: list[str] = []
    for line in dashboard_section().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].count("`") or cells[1] == "query":
            continue
        queries.extend(re.findall(r"`([^`]+)`", cells[1]))
    return queries


def suggested_alert_clauses() -> list[str]:
    """The clauses of the "Suggested alerts:" sentence, whitespace collapsed."""
    text = " ".join(dashboard_section().split())
    match = re.search(r"Suggested alerts(?: \([^)]*\))?: (.+?)\.(?:\s|$)", text)
    assert match, "docs/operations.md has no 'Suggested alerts:' sentence"
    return [c.strip() for c in match.group(1).split(";")]


# ------------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern as a regex, with moby/patternmatcher's rules (``**`` crosses
    directories, ``*`` and ``?`` do not)."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    out += "(.*/)?"
                    i += 1
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


@cache
def dockerignore_patterns() -> tuple[tuple[bool, re.Pattern[str], str], ...]:
    """(is_exception, regex, cleaned pattern) per line of .dockerignore."""
    patterns: list[tuple[bool, re.Pattern[str], str]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line.lstrip("!").strip()
        cleaned = os.path.normpath(line).lstrip("/")
        patterns.append((exception, _pattern_regex(cleaned), cleaned))
    return tuple(patterns)


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, '/'-separated) out of the build context."""
    parts = path.split("/")
    parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    matched = False
    for exception, regex, _ in dockerignore_patterns():
        if exception != matched:
            continue
        hit = bool(regex.match(path)) or any(regex.match(p) for p in parents)
        if hit:
            matched = not exception
    return matched


def build_context() -> Iterator[str]:
    """Every file Docker would send as the build context (relative paths)."""
    exceptions = [p for exc, _, p in dockerignore_patterns() if exc]
    for top, dirs, files in os.walk(ROOT):
        rel_top = os.path.relpath(top, ROOT)
        rel_top = "" if rel_top == "." else rel_top + "/"
        kept = []
        for d in dirs:
            rel = rel_top + d
            # Only descend into an ignored directory if an exception could re-include below it.
            if dockerignored(rel) and not any(
                e.startswith(rel + "/") or e.startswith("**") for e in exceptions
            ):
                continue
            kept.append(d)
        dirs[:] = kept
        for name in files:
            rel = rel_top + name
            if not dockerignored(rel):
                yield rel
