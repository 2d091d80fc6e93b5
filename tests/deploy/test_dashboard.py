"""The Grafana dashboard and the Prometheus alert rules shared by Swarm and the Helm chart:
well-formed, PromQL that parses, only contract metric names, the topics the issue asks for, and
the queries and alerts docs/operations.md promises."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.files_support import (
    ALERTS,
    DASHBOARD,
    KNOWN_METRICS,
    documented_queries,
    duration,
    label_names,
    load_json,
    load_yaml,
    metric_names,
    squash,
    suggested_alert_clauses,
)

pytestmark = pytest.mark.deploy

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PER_WORKER_JOIN = "*on(instance)group_left(worker)collab_worker_info"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = load_json(DASHBOARD)
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, nested ones too."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels(dashboard) for t in p.get("targets") or []]


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for _, t in queries(dashboard)]


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    data = load_yaml(ALERTS)
    assert set(data) == {"groups"}
    rules = []
    for group in data["groups"]:
        assert set(group) <= {"name", "rules", "interval"} and group["name"]
        rules.extend(group["rules"])
    return rules


# ------------------------------------------------------------------------------- dashboard shape


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "collab-pool"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None, "provisioned dashboards carry no database id"


def test_panel_ids_are_unique_and_every_panel_is_placed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    boxes = []
    for p in panels(dashboard):
        grid = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), p["title"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), p["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]
        boxes.append((p["title"], grid))
    for i, (a, ga) in enumerate(boxes):
        for b, gb in boxes[i + 1 :]:
            overlap_x = ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
            overlap_y = ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]
            assert not (overlap_x and overlap_y), f"panels {a!r} and {b!r} overlap"


def test_datasource_variable_defaults_to_the_provisioned_prometheus(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "prometheus"  # the uid deploy/swarm provisions


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["refId"]
    text = DASHBOARD.read_text()
    assert '"uid": "prometheus"' not in text.replace('"value": "prometheus"', ""), (
        "a hard-coded datasource uid; use ${datasource}"
    )


def test_every_query_parses_and_uses_only_contract_metrics(dashboard: dict[str, Any]) -> None:
    seen = set()
    for panel, target in queries(dashboard):
        names = metric_names(target["expr"])  # raises on a PromQL syntax error
        assert names, f"{panel['title']}: {target['expr']} selects no metric"
        unknown = names - KNOWN_METRICS
        assert not unknown, f"{panel['title']}: unknown metrics {unknown}"
        seen |= names
    assert seen


def test_no_query_depends_on_the_job_label(dashboard: dict[str, Any]) -> None:
    """Swarm's and Kubernetes' scrape jobs are named differently."""
    for panel, target in queries(dashboard):
        assert "job" not in label_names(target["expr"]), panel["title"]
        assert not re.search(r"\bjob\b", target.get("legendFormat", "")), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert "job" not in str(variable.get("query", "")), variable["name"]


# ------------------------------------------------------------------------------- topics

# Topic of the issue -> (metric, what else the query must contain, squashed).
TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sessions per worker": ("collab_sessions_active", (PER_WORKER_JOIN,)),
    "connections per worker by protocol": (
        "collab_connections_active",
        ("sumby(worker,protocol)", PER_WORKER_JOIN),
    ),
    "documents per worker": ("collab_documents_loaded", ()),
    "update rate": ("collab_updates_received_total", ("rate(",)),
    "update bytes": ("collab_update_bytes_total", ("rate(",)),
    "fan-out": ("collab_messages_sent_total", ("rate(",)),
    "flush latency p50": ("collab_flush_seconds_bucket", ("histogram_quantile(0.5,",)),
    "flush latency p99": ("collab_flush_seconds_bucket", ("histogram_quantile(0.99,",)),
    "flush errors": ("collab_flush_errors_total", ("rate(",)),
    "storage requests by op and outcome": ("collab_storage_requests_total", ("sumby(op,outcome)",)),
    "unflushed bytes": ("collab_unflushed_bytes", ()),
    "unflushed age": ("collab_unflushed_age_seconds", ()),
    "commits by outcome": ("collab_commits_total", ("sumby(outcome)",)),
    "commit latency": ("collab_commit_seconds_bucket", ("histogram_quantile(",)),
    "event-loop lag per worker": ("collab_event_loop_lag_seconds", (PER_WORKER_JOIN,)),
    "session load latency": ("collab_session_load_seconds_bucket", ("histogram_quantile(",)),
    "routed per worker": ("collab_router_routed_total", ("sumby(worker)", "rate(")),
    "hand-offs": ("collab_router_handoffs_total", ("rate(",)),
    "upstream errors": ("collab_router_upstream_errors_total", ("rate(",)),
    "client errors by reason": ("collab_router_client_errors_total", ("sumby(reason)",)),
    "router workers by state": ("collab_router_workers", ("by(state)",)),
    "router connections": ("collab_router_connections_active", ()),
    "draining workers": ("collab_worker_draining", ()),
    "protocol errors": ("collab_protocol_errors_total", ("sumby(reason)",)),
}


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_required_topic_has_a_panel(dashboard: dict[str, Any], topic: str) -> None:
    metric, fragments = TOPICS[topic]
    matching = [
        e
        for e in exprs(dashboard)
        if metric in metric_names(e) and all(f in squash(e) for f in fragments)
    ]
    assert matching, f"no panel plots {topic} ({metric} with {fragments})"


def test_per_worker_series_are_named_by_worker_id(dashboard: dict[str, Any]) -> None:
    """Series of one worker carry its WORKER_ID (from collab_worker_info), not ip:port."""
    for panel, target in queries(dashboard):
        if PER_WORKER_JOIN in squash(target["expr"]):
            assert "{{worker}}" in target["legendFormat"], panel["title"]


def test_the_draining_panel_shows_who_drains(dashboard: dict[str, Any]) -> None:
    titles = {
        p["title"]
        for p in panels(dashboard)
        for t in p.get("targets") or []
        if "collab_worker_draining" in t["expr"]
    }
    assert any("drain" in t.lower() for t in titles), titles


def test_every_query_the_runbook_lists_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    """docs/operations.md ("Read the dashboards") says the dashboard plots these queries."""
    documented = documented_queries()
    assert len(documented) >= 10, documented
    on_dashboard = [squash(e) for e in exprs(dashboard)]
    histogram_query = ""
    for query in documented:
        if f"{query}_bucket" in KNOWN_METRICS:
            # "same for `collab_session_load_seconds`": the previous quantile, of this histogram.
            (previous,) = re.findall(r"(collab_[a-z_]+)_bucket", histogram_query)
            query = histogram_query.replace(previous, query)
        if "histogram_quantile" in query:
            histogram_query = query
        try:
            names = metric_names(query)
        except ValueError:
            # A shorthand such as `collab_router_workers{state}`: its metric must be plotted.
            (name,) = re.findall(r"collab_[a-z_]+", query)
            assert any(name in metric_names(e) for e in exprs(dashboard)), query
            continue
        assert names <= KNOWN_METRICS, query
        assert any(squash(query) in e for e in on_dashboard), f"not on the dashboard: {query}"


# ------------------------------------------------------------------------------- alerts


def test_alert_rules_are_well_formed(alerts: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in alerts]
    assert names and len(names) == len(set(names)), names
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, (
            rule
        )
        assert re.fullmatch(r"Collab[A-Za-z]+", rule["alert"]), rule["alert"]
        assert duration(rule["for"]).total_seconds() > 0, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        names_used = metric_names(rule["expr"])  # parses
        assert names_used and names_used <= KNOWN_METRICS, rule["alert"]
        assert "job" not in label_names(rule["expr"]), rule["alert"]
        # Go templates in annotations: balanced, and only $labels / $value.
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}"), rule["alert"]
            for ref in re.findall(r"\{\{(.*?)\}\}", text):
                assert re.match(r"\s*\$(labels\.[a-z_]+|value)\b", ref), ref


# The runbook's "Suggested alerts" clause -> (metric, comparison, threshold, for).
SUGGESTED = {
    "unflushed age > 30 s for 2 min": ("collab_unflushed_age_seconds", ">", 30, "2m"),
    "flush errors > 0 for 5 min": ("collab_flush_errors_total", ">", 0, "5m"),
    '`collab_router_workers{state="down"} > 0` for 2 min': ("collab_router_workers", ">", 0, "2m"),
    "event-loop lag > 0.25 s for 5 min": ("collab_event_loop_lag_seconds", ">", 0.25, "5m"),
    "commit errors > 0 for 15 min": ("collab_commits_total", ">", 0, "15m"),
}


def test_the_alerts_are_the_ones_the_runbook_suggests(alerts: list[dict[str, Any]]) -> None:
    clauses = suggested_alert_clauses()
    assert sorted(clauses) == sorted(SUGGESTED), (
        "docs/operations.md's suggested alerts changed; update alerts.yml and this test"
    )
    assert len(alerts) == len(SUGGESTED)
    for clause, (metric, op, threshold, for_) in SUGGESTED.items():
        matching = [r for r in alerts if metric in metric_names(r["expr"])]
        assert len(matching) == 1, clause
        rule = matching[0]
        expr = squash(rule["expr"])
        assert expr.endswith(f"{op}{threshold}"), f"{clause}: {rule['expr']}"
        assert duration(rule["for"]) == duration(for_), clause
    by_metric = {m: r for r in alerts for m in metric_names(r["expr"])}
    assert 'state="down"' in squash(by_metric["collab_router_workers"]["expr"])
    assert 'outcome="error"' in squash(by_metric["collab_commits_total"]["expr"])
    # "page if above 30 s": the one alert that pages.
    assert by_metric["collab_unflushed_age_seconds"]["labels"]["severity"] == "critical"
