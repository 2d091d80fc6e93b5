"""Every metric name that a deployment file, the dashboard, an alert, the HPA/KEDA/adapter rules,
the autoscaler or the docs refer to exists on a running worker's or router's /metrics.

A renamed metric would otherwise leave a dashboard panel empty, an alert silent and an
autoscaler blind, with no error anywhere. Names are taken from the PromQL in those files (parsed
where it is PromQL), and checked against what real processes serve, not against a list.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.chart_support import render_chart
from tests.deploy.files_support import family_names, series_names
from tests.pool import pool

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\bcollab_[a-z0-9_]+\b")


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def dashboard_refs() -> dict[str, str]:
    dashboard = json.loads((ROOT / "charts/collab/files/dashboards/collab.json").read_text())
    exprs = [v for k, v in walk(dashboard) if k == "expr" and isinstance(v, str)]
    assert exprs, "the dashboard has no queries"
    return {e: "dashboard" for e in exprs}


def alert_refs() -> dict[str, str]:
    rules = yaml.safe_load((ROOT / "charts/collab/files/prometheus/alerts.yml").read_text())
    exprs = [str(v) for k, v in walk(rules) if k == "expr"]
    assert exprs, "the alerts file has no rules"
    return {e: "alerts.yml" for e in exprs}


def adapter_refs() -> dict[str, str]:
    text = (ROOT / "charts/collab/files/prometheus/adapter-rules.yaml").read_text()
    rules = yaml.safe_load(text)
    found = {
        str(v): "adapter-rules.yaml"
        for k, v in walk(rules)
        if k in ("seriesQuery", "metricsQuery", "as", "matches")
    }
    assert found
    return found


def rendered_autoscaler_refs() -> dict[str, str]:
    found: dict[str, str] = {}
    keda = {"enabled": True, "serverAddress": "http://prometheus.monitoring:9090"}
    for values in ({"autoscaling": {"enabled": True}}, {"autoscaling": {"keda": keda}}):
        for obj in render_chart({**values, "worker": {"mode": "statefulset"}}):
            kind = obj.get("kind")
            if kind == "HorizontalPodAutoscaler":
                for metric in obj["spec"]["metrics"]:
                    found[metric["pods"]["metric"]["name"]] = "HPA"
            if kind == "ScaledObject":
                for trigger in obj["spec"]["triggers"]:
                    found[trigger["metadata"]["query"]] = "KEDA ScaledObject"
    assert {"HPA", "KEDA ScaledObject"} <= set(found.values())
    return found


def autoscaler_refs() -> dict[str, str]:
    tree = ast.parse((ROOT / "ops/swarm_autoscaler.py").read_text())
    strings = {
        node.value: "ops/swarm_autoscaler.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert any(METRIC.search(s) for s in strings), "the autoscaler reads no collab_* metric"
    return strings


def swarm_object_names() -> set[str]:
    """Swarm secret and config names start with collab_ too; they are not metrics."""
    stack = yaml.safe_load((ROOT / "swarm.yml").read_text())
    names: set[str] = set()
    for section in ("secrets", "configs"):
        for key, spec in (stack.get(section) or {}).items():
            names.add(key)
            if isinstance(spec, dict) and spec.get("name"):
                names.add(str(spec["name"]))
    return names


def docs_refs() -> dict[str, str]:
    """Backticked spans of the docs and the README (queries, metric names)."""
    found: dict[str, str] = {}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for span in re.findall(r"`([^`\n]+)`", page.read_text()):
            found.setdefault(span, str(page.relative_to(ROOT)))
    return found


def references() -> dict[str, str]:
    """Each collab_* name referenced anywhere, with one place it was found."""
    sources = {
        **docs_refs(),
        **autoscaler_refs(),
        **adapter_refs(),
        **alert_refs(),
        **dashboard_refs(),
        **rendered_autoscaler_refs(),
    }
    not_metrics = swarm_object_names()
    refs: dict[str, str] = {}
    for text, where in sources.items():
        for name in METRIC.findall(text):
            if name not in not_metrics:
                refs.setdefault(name, where)
    return refs


async def test_every_referenced_metric_is_served_by_a_live_worker_or_router(
    tmp_path: Path,
) -> None:
    refs = references()
    assert "collab_sessions_active" in refs and "collab_router_workers" in refs
    async with pool(tmp_path, 1) as p, httpx.AsyncClient() as http:
        worker = (await http.get(f"{p.workers['w-0'].http}/metrics")).text
        router = (await http.get(f"{p.http}/metrics")).text
    pages = (worker, router)
    served = set().union(*(f(page) for f in (series_names, family_names) for page in pages))
    missing = {name: where for name, where in refs.items() if name not in served}
    assert not missing, f"referenced but not served (name: where): {missing}"


def test_the_checker_would_catch_a_misspelt_name() -> None:
    page = "\n".join(
        [
            "# HELP collab_sessions_active x",
            "# TYPE collab_sessions_active gauge",
            "collab_sessions_active 3.0",
            "# HELP collab_commits_total c",
            "# TYPE collab_commits_total counter",
            "# HELP collab_flush_seconds h",
            "# TYPE collab_flush_seconds histogram",
            "",
        ]
    )
    served = series_names(page) | family_names(page)
    assert {"collab_sessions_active", "collab_commits_total", "collab_flush_seconds"} <= served
    assert "collab_flush_seconds_bucket" in served and "collab_commits" not in served
    assert "collab_session_active" not in served
    assert "collab_commits_created" not in served and "collab_commits_total_total" not in served
