"""charts/collab, rendered offline with the real Helm engine (helm-python-sdk) and checked as
objects: lint, Kubernetes schemas, wiring between objects (selectors, ports, DNS names, secret
references), drain timings, autoscaling, observability files, values schema and NOTES.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import helm_python
import kubernetes_validate
import promql_parser
import pytest
import yaml

from router.settings import RouterSettings
from tests.deploy.chart_support import (
    CHART_DIR,
    CLUSTER_DOMAIN,
    CRD_KINDS,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    SECRET_ENV,
    STABLE_SELECTOR_KEYS,
    Obj,
    Rendered,
    app_version,
    chart_values,
    component_of,
    env_of,
    env_value,
    named_port,
    pod_labels,
    pod_spec,
    resolved_env,
    secret_refs,
    selected_workloads,
    selects,
    walk_values,
)
from tests.deploy.chart_support import chart as chart_of_the_repo
from tests.deploy.chart_support import lint as lint_chart
from tests.deploy.chart_support import render as render_chart
from tests.deploy.chart_support import render_error as render_error_of
from tests.deploy.chart_support import render_fresh as render_fresh_chart
from tests.deploy.config_names import router_env_names, worker_env_names
from worker.settings import Settings

pytestmark = pytest.mark.deploy

# These tests cover worker.mode=statefulset (the StatefulSet, its HPA / KEDA); operator mode
# (the default: CRD, operator, RBAC, CollabPool and the Pods the operator makes from it) is
# tested in test_chart_operator.py. Both modes share everything else, tested here.
STATEFULSET: Obj = {"worker": {"mode": "statefulset"}}


def in_mode(values: Obj | None) -> Obj:
    values = dict(values or {})
    values["worker"] = {**STATEFULSET["worker"], **values.get("worker", {})}
    return values


def render(values: Obj | None = None, **kwargs: Any) -> Rendered:
    return render_chart(in_mode(values), **kwargs)


def render_error(values: Obj) -> str:
    return render_error_of(in_mode(values))


def render_fresh(values: Obj | None = None) -> Rendered:
    return render_fresh_chart(in_mode(values))


def lint(values: Obj | None = None, *, strict: bool = False) -> list[Obj]:
    return lint_chart(in_mode(values), strict=strict)


class _Chart:
    """The chart, its values merged and validated in statefulset mode."""

    def merge_values(self, values: Obj) -> Obj:
        merged: Obj = chart_of_the_repo().merge_values(in_mode(values))
        return merged

    def validate_schema(self, values: Obj) -> None:
        chart_of_the_repo().validate_schema(in_mode(values))

    def render(self, values: Obj, **kwargs: Any) -> Any:
        return chart_of_the_repo().render(in_mode(values), **kwargs)


def chart() -> _Chart:
    return _Chart()


WORKER = f"{RELEASE}-worker"
ROUTER = f"{RELEASE}-router"
MINIO = f"{RELEASE}-minio"
AUTH_SECRET_NAME = f"{RELEASE}-auth"
STORAGE_SECRET_NAME = f"{RELEASE}-storage"
ALERTS = CHART_DIR / "files" / "prometheus" / "alerts.yml"
ADAPTER_RULES = CHART_DIR / "files" / "prometheus" / "adapter-rules.yaml"
DASHBOARDS = CHART_DIR / "files" / "dashboards"

EXTERNAL: Obj = {
    "minio": {"enabled": False},
    "storage": {
        "endpoint": "s3.example.com",
        "port": 443,
        "secure": True,
        "bucket": "collab-prod",
        "existingSecret": "collab-s3",
    },
    "auth": {"existingSecret": "collab-tokens"},
}
HPA: Obj = {
    "autoscaling": {
        "enabled": True,
        "minReplicas": 3,
        "maxReplicas": 30,
        "targetSessionsPerWorker": 150,
        "scaleDown": {"stabilizationWindowSeconds": 600, "periodSeconds": 180},
    }
}
KEDA: Obj = {
    "autoscaling": {
        "keda": {"enabled": True, "serverAddress": "http://prometheus.monitoring.svc:9090"}
    }
}
PROMETHEUS_PEER: Obj = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
OBSERVED: Obj = {
    "metrics": {
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
    },
    "networkPolicy": {"metricsFrom": [PROMETHEUS_PEER]},
}
NO_NETPOL: Obj = {"networkPolicy": {"enabled": False}}
DRAIN: Obj = {
    "worker": {
        "terminationGracePeriodSeconds": 160,
        "drain": {"preStopTimeoutSeconds": 120, "timeoutMs": 30000},
    }
}
GIVEN = {
    "admin": "admin-token-given-in-values-0123",
    "auth": "auth-secret-given-in-values-4567",
    "access": "minio-access-given-89",
    "secret": "minio-secret-given-in-values-abcd",
}
GIVEN_CREDENTIALS: Obj = {
    "auth": {"adminToken": GIVEN["admin"], "authSecret": GIVEN["auth"]},
    "storage": {"accessKey": GIVEN["access"], "secretKey": GIVEN["secret"]},
}
OPEN: Obj = {
    "auth": {"clientAuth": False},
    "router": {"replicas": 1, "service": {"type": "LoadBalancer", "nodePort": 30080}},
    "worker": {"port": 9091},
    "config": {"maxMessageBytes": 16777216},
}
VALUE_SETS: dict[str, Obj] = {
    "default": {},
    "external": EXTERNAL,
    "hpa": HPA,
    "keda": KEDA,
    "observed": OBSERVED,
    "no-netpol": NO_NETPOL,
    "drain": DRAIN,
    "given-credentials": GIVEN_CREDENTIALS,
    "open": OPEN,
}


@pytest.fixture(params=sorted(VALUE_SETS), ids=sorted(VALUE_SETS))
def case(request: pytest.FixtureRequest) -> tuple[Obj, Rendered]:
    values = VALUE_SETS[request.param]
    return values, render(values)


def merged(values: Obj) -> Obj:
    """The values a release would use: chart defaults coalesced with ``values``."""
    return chart().merge_values(values)


# -- lint and Kubernetes schemas ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    assert lint(VALUE_SETS[name]) == []
    assert lint(VALUE_SETS[name], strict=True) == []


def test_every_object_is_valid_kubernetes(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            continue  # asserted field by field in their own tests
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


def test_default_objects() -> None:
    names = set(render().names())
    expected = {
        ("StatefulSet", WORKER),
        ("Service", WORKER),
        ("Deployment", ROUTER),
        ("Service", ROUTER),
        ("PodDisruptionBudget", WORKER),
        ("PodDisruptionBudget", ROUTER),
        ("NetworkPolicy", WORKER),
        ("NetworkPolicy", MINIO),
        ("Secret", AUTH_SECRET_NAME),
        ("Secret", STORAGE_SECRET_NAME),
        ("StatefulSet", MINIO),
        ("Service", MINIO),
        ("ServiceAccount", RELEASE),
    }
    assert expected <= names
    kinds = {kind for kind, _ in names}
    assert not kinds & {"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"}
    assert "ScaledObject" not in kinds


def test_standard_labels_on_every_object(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "collab"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == app_version()
        assert labels["helm.sh/chart"].startswith("collab-")
        assert labels["app.kubernetes.io/component"]


@pytest.mark.parametrize(
    ("release", "values", "worker", "router"),
    [
        ("collab", {}, "collab-worker", "collab-router"),
        ("prod", {}, "prod-collab-worker", "prod-collab-router"),
        ("my-collab", {}, "my-collab-worker", "my-collab-router"),
        ("x", {"fullnameOverride": "cs"}, "cs-worker", "cs-router"),
        ("a" * 53, {}, None, None),
    ],
)
def test_object_names(release: str, values: Obj, worker: str | None, router: str | None) -> None:
    rendered = render(values, name=release)
    statefulset = rendered.workload("worker")
    deployment = rendered.workload("router")
    if worker is not None:
        assert statefulset["metadata"]["name"] == worker
        assert deployment["metadata"]["name"] == router
    # Room for "-<ordinal>" pod names and the controller-revision-hash label (63 chars).
    assert len(statefulset["metadata"]["name"]) <= 52
    for obj in rendered.objects:
        assert len(obj["metadata"]["name"]) <= 63


# -- wiring: selectors, services, ports -----------------------------------------------------


def test_selectors_match_the_right_pods(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    for workload in rendered.workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert set(selector) == STABLE_SELECTOR_KEYS, workload["metadata"]["name"]
        assert selects(selector, pod_labels(workload))
        assert selected_workloads(rendered, selector) == [workload["metadata"]["name"]]

    by_component = {component_of(w): w["metadata"]["name"] for w in rendered.workloads()}
    for service in rendered.all("Service"):
        name = service["metadata"]["name"]
        component = component_of(service)
        assert set(service["spec"]["selector"]) == STABLE_SELECTOR_KEYS
        assert selected_workloads(rendered, service["spec"]["selector"]) == [
            by_component[component]
        ], name
        container = pod_spec(rendered.workload(component))["containers"][0]
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert isinstance(target, str), f"{name}: use the named container port"
            named_port(container, target)

    for pdb in rendered.all("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selected_workloads(rendered, selector) == [pdb["metadata"]["name"]]

    for policy in rendered.all("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selected_workloads(rendered, selector) == [policy["metadata"]["name"]]

    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for scaler in rendered.all(kind):
            target = scaler["spec"]["scaleTargetRef"]
            assert target["kind"] == "StatefulSet"
            assert target["apiVersion"] == "apps/v1"
            assert rendered.get("StatefulSet", target["name"]) is rendered.workload("worker")

    for monitor in rendered.all("ServiceMonitor"):
        selected = [
            s
            for s in rendered.all("Service")
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        service_ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in service_ports
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_headless_worker_service() -> None:
    rendered = render()
    statefulset = rendered.workload("worker")
    service = rendered.get("Service", statefulset["spec"]["serviceName"])
    assert service["metadata"]["name"] == WORKER
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    # The reason is written next to it.
    text = next(t for p, t in rendered.manifests.items() if p.endswith("worker-service.yaml"))
    before = text.split("publishNotReadyAddresses")[0].rstrip().splitlines()[-1]
    assert before.strip().startswith("#")


@pytest.mark.parametrize("component", ["worker", "router"])
def test_probes_and_ports(case: tuple[Obj, Rendered], component: str) -> None:
    values, rendered = case
    container = rendered.container(component)
    port = named_port(container, "http")
    assert port == merged(values)[component]["port"]
    assert int(env_value(container, "PORT")) == port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["args"] == [component]


def test_worker_identity_is_the_pod_name(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    for component, name in (("worker", "WORKER_ID"), ("router", "ROUTER_ID")):
        entry = env_of(rendered.container(component))[name]
        assert entry == {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def test_router_finds_the_workers(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    router = rendered.container("router")
    service = rendered.get("Service", rendered.workload("worker")["spec"]["serviceName"])
    assert env_value(router, "WORKERS_DNS") == (
        f"{service['metadata']['name']}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
    )
    workers_port = int(env_value(router, "WORKERS_PORT"))
    assert workers_port == named_port(rendered.container("worker"), "http")
    assert service["spec"]["ports"][0]["port"] == workers_port
    assert "WORKERS" not in env_of(router)


def test_env_names_are_read_by_the_code(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    worker = set(env_of(rendered.container("worker")))
    router = set(env_of(rendered.container("router")))
    assert worker <= worker_env_names(), worker - worker_env_names()
    assert router <= router_env_names(), router - router_env_names()


def test_the_code_accepts_the_rendered_environment(case: tuple[Obj, Rendered]) -> None:
    """Each container's env, resolved as the kubelet would, parsed by the real settings code:
    a value the worker or router would refuse at start fails here."""
    values, rendered = case
    worker = Settings.from_env(resolved_env(rendered, rendered.container("worker"), f"{WORKER}-3"))
    assert worker.worker_id == f"{WORKER}-3"
    assert worker.storage.minio_endpoint and worker.storage.minio_secret_key
    assert worker.admin_token and worker.log_format == merged(values)["config"]["logFormat"]
    assert (worker.auth_secret is not None) == merged(values)["auth"]["clientAuth"]
    router = RouterSettings.from_env(
        resolved_env(rendered, rendered.container("router"), f"{ROUTER}-abc")
    )
    assert router.workers_dns and router.workers_port == worker.port
    assert router.admin_token == worker.admin_token


def test_numeric_env_values_are_plain_integers(case: tuple[Obj, Rendered]) -> None:
    """Helm turns big numbers into floats ("4.194304e+06"); the code wants integers."""
    values, rendered = case
    for component in ("worker", "router"):
        for name, entry in env_of(rendered.container(component)).items():
            if name.endswith(("_MS", "PORT", "_BYTES")) and "value" in entry:
                assert re.fullmatch(r"[0-9]+", entry["value"]), (name, entry["value"])
    expected = str(merged(values)["config"]["maxMessageBytes"])
    assert env_value(rendered.container("worker"), "MAX_MESSAGE_BYTES") == expected
    assert env_value(rendered.container("router"), "MAX_MESSAGE_BYTES") == expected


def test_worker_settings_reach_the_env() -> None:
    values: Obj = {
        "worker": {
            "flushIntervalMs": 250,
            "sessionIdleMs": 60000,
            "cooldownMs": 1200000,
            "logIntervalMs": 7000,
            "maxUpdateBytes": 65536,
            "maxDocBytes": 1048576,
        },
        "config": {"logFormat": "text"},
        "router": {"healthIntervalMs": 500, "handoffTimeoutMs": 20000},
    }
    rendered = render(values)
    worker = rendered.container("worker")
    router = rendered.container("router")
    assert env_value(worker, "FLUSH_INTERVAL_MS") == "250"
    assert env_value(worker, "SESSION_IDLE_MS") == "60000"
    assert env_value(worker, "COOLDOWN_MS") == "1200000"
    assert env_value(worker, "LOG_INTERVAL_MS") == "7000"
    assert env_value(worker, "MAX_UPDATE_BYTES") == "65536"
    assert env_value(worker, "MAX_DOC_BYTES") == "1048576"
    assert env_value(worker, "LOG_FORMAT") == env_value(router, "LOG_FORMAT") == "text"
    assert env_value(router, "HEALTH_INTERVAL_MS") == "500"
    assert env_value(router, "HANDOFF_TIMEOUT_MS") == "20000"


# -- secrets --------------------------------------------------------------------------------


def test_secrets_only_by_reference(case: tuple[Obj, Rendered]) -> None:
    values, rendered = case
    rendered_secrets = {s["metadata"]["name"]: s for s in rendered.all("Secret")}
    full = merged(values)
    existing = {s for s in (full["auth"]["existingSecret"], full["storage"]["existingSecret"]) if s}
    for workload in rendered.workloads():
        for container in pod_spec(workload)["containers"]:
            for name, entry in env_of(container).items():
                if name in SECRET_ENV:
                    assert "value" not in entry, f"{container['name']}: {name} is inlined"
                    assert entry["valueFrom"]["secretKeyRef"], name
    refs = secret_refs(rendered)
    assert {env for _, env, _, _ in refs} >= {"ADMIN_TOKEN", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}
    for container, env, secret, key in refs:
        if secret in existing:
            continue
        assert secret in rendered_secrets, f"{container} {env} refers to missing Secret {secret}"
        assert key in rendered_secrets[secret]["data"], f"{secret} has no key {key}"
    # No generated credential appears anywhere outside its Secret.
    others = (
        "\n".join(yaml.safe_dump(o) for o in rendered.objects if o["kind"] != "Secret")
        + rendered.notes
    )
    for name in rendered_secrets:
        for value in rendered.secret_data(name).values():
            assert value not in others


def test_generated_secrets_hold_every_key() -> None:
    rendered = render()
    auth = rendered.secret_data(AUTH_SECRET_NAME)
    storage = rendered.secret_data(STORAGE_SECRET_NAME)
    assert set(auth) == {"admin-token", "auth-secret"}
    assert set(storage) == {"access-key", "secret-key"}
    assert len(auth["admin-token"]) >= 32 and len(auth["auth-secret"]) >= 32
    assert len(storage["access-key"]) >= 16 and len(storage["secret-key"]) >= 32
    refs = {(env, secret, key) for _, env, secret, key in secret_refs(rendered)}
    assert ("ADMIN_TOKEN", AUTH_SECRET_NAME, "admin-token") in refs
    assert ("AUTH_SECRET", AUTH_SECRET_NAME, "auth-secret") in refs
    assert ("MINIO_ACCESS_KEY", STORAGE_SECRET_NAME, "access-key") in refs
    assert ("MINIO_SECRET_KEY", STORAGE_SECRET_NAME, "secret-key") in refs


def test_generated_secrets_are_random_and_kept_across_upgrades() -> None:
    first = render_fresh().secret_data(AUTH_SECRET_NAME)["admin-token"]
    second = render_fresh().secret_data(AUTH_SECRET_NAME)["admin-token"]
    assert first != second  # random when nothing exists yet (offline: lookup finds nothing)
    source = (CHART_DIR / "templates" / "secrets.yaml").read_text()
    # On a cluster the values already stored are reused.
    assert source.count('lookup "v1" "Secret" .Release.Namespace $name') == 2
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    assert "hasKey .existing .key" in helpers


def test_given_credentials_go_into_the_secrets_only() -> None:
    rendered = render(GIVEN_CREDENTIALS)
    assert rendered.secret_data(AUTH_SECRET_NAME) == {
        "admin-token": GIVEN["admin"],
        "auth-secret": GIVEN["auth"],
    }
    assert rendered.secret_data(STORAGE_SECRET_NAME) == {
        "access-key": GIVEN["access"],
        "secret-key": GIVEN["secret"],
    }
    for value in GIVEN.values():
        assert value not in rendered.text
        assert value not in rendered.notes


def test_changed_credentials_restart_the_pods() -> None:
    def checksum(rendered: Rendered, component: str) -> str:
        annotations = rendered.workload(component)["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/credentials"])

    before, after = render(), render(GIVEN_CREDENTIALS)
    for component in ("worker", "router", "minio"):
        assert checksum(before, component) != checksum(after, component)


def test_existing_secrets_are_used_and_not_rendered() -> None:
    rendered = render(EXTERNAL)
    assert rendered.all("Secret") == []
    refs = {(env, secret, key) for _, env, secret, key in secret_refs(rendered)}
    assert refs == {
        ("ADMIN_TOKEN", "collab-tokens", "admin-token"),
        ("AUTH_SECRET", "collab-tokens", "auth-secret"),
        ("MINIO_ACCESS_KEY", "collab-s3", "access-key"),
        ("MINIO_SECRET_KEY", "collab-s3", "secret-key"),
    }
    assert "get secret collab-tokens" in rendered.notes


def test_client_auth_off() -> None:
    rendered = render(OPEN)
    for component in ("worker", "router"):
        assert "AUTH_SECRET" not in env_of(rendered.container(component))
        assert "ADMIN_TOKEN" in env_of(rendered.container(component))
    assert set(rendered.secret_data(AUTH_SECRET_NAME)) == {"admin-token"}
    assert "client authentication is off" in rendered.notes


# -- draining -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "drain"])
def test_grace_period_covers_both_drains(name: str) -> None:
    values = merged(VALUE_SETS[name])
    rendered = render(VALUE_SETS[name])
    worker = rendered.container("worker")
    pre_stop = values["worker"]["drain"]["preStopTimeoutSeconds"]
    assert worker["lifecycle"]["preStop"]["exec"]["command"] == [
        "collab",
        "self-drain",
        "--timeout",
        str(pre_stop),
    ]
    drain_ms = int(env_value(worker, "DRAIN_TIMEOUT_MS"))
    assert drain_ms == values["worker"]["drain"]["timeoutMs"]
    grace = pod_spec(rendered.workload("worker"))["terminationGracePeriodSeconds"]
    assert grace == values["worker"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + math.ceil(drain_ms / 1000) + 5


def test_too_short_grace_period_is_refused() -> None:
    drain = {"preStopTimeoutSeconds": 120, "timeoutMs": 30000}
    at_minimum = {"worker": {"terminationGracePeriodSeconds": 155, "drain": drain}}
    assert pod_spec(render(at_minimum).workload("worker"))["terminationGracePeriodSeconds"] == 155
    message = render_error({"worker": {"terminationGracePeriodSeconds": 154, "drain": drain}})
    assert "worker.terminationGracePeriodSeconds (154) is too short to drain" in message
    assert "= 155" in message
    # The default grace does not cover a longer drain either.
    assert "too short to drain" in render_error({"worker": {"drain": drain}})


def test_router_leaves_the_endpoints_before_stopping() -> None:
    rendered = render()
    router = rendered.container("router")
    assert router["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod_spec(rendered.workload("router"))["terminationGracePeriodSeconds"] > 5
    strategy = rendered.workload("router")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    message = render_error({"router": {"preStopSleepSeconds": 30}})
    assert "router.terminationGracePeriodSeconds (30) must be greater" in message


# -- storage --------------------------------------------------------------------------------


def test_in_chart_minio() -> None:
    rendered = render()
    minio = rendered.workload("minio")
    assert minio["kind"] == "StatefulSet" and minio["spec"]["replicas"] == 1
    container = rendered.container("minio")
    assert container["image"].startswith("minio/minio:RELEASE.")
    assert container["livenessProbe"]["httpGet"] == {"path": "/minio/health/live", "port": "s3"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/minio/health/ready", "port": "s3"}
    claims = minio["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    # MinIO's root user is the workers' key pair, from the same Secret.
    env = env_of(container)
    worker = env_of(rendered.container("worker"))
    assert env["MINIO_ROOT_USER"]["valueFrom"] == worker["MINIO_ACCESS_KEY"]["valueFrom"]
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"] == worker["MINIO_SECRET_KEY"]["valueFrom"]
    service = rendered.get("Service", MINIO)
    worker_container = rendered.container("worker")
    endpoint = env_value(worker_container, "MINIO_ENDPOINT")
    assert endpoint == f"{MINIO}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
    assert "://" not in endpoint and ":" not in endpoint
    assert int(env_value(worker_container, "MINIO_PORT")) == service["spec"]["ports"][0]["port"]
    assert env_value(worker_container, "MINIO_SECURE") == "false"
    assert env_value(worker_container, "MINIO_BUCKET") == "sessions"
    assert "WARNING: storage is the in-chart MinIO" in rendered.notes


def test_external_storage() -> None:
    rendered = render(EXTERNAL)
    worker = rendered.container("worker")
    assert env_value(worker, "MINIO_ENDPOINT") == "s3.example.com"
    assert env_value(worker, "MINIO_PORT") == "443"
    assert env_value(worker, "MINIO_SECURE") == "true"
    assert env_value(worker, "MINIO_BUCKET") == "collab-prod"
    assert not [o for o in rendered.objects if component_of(o) == "minio"]
    assert "in-chart MinIO" not in rendered.notes


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"minio": {"enabled": False}}, "set storage.endpoint"),
        ({"storage": {"endpoint": "s3.example.com"}}, "set minio.enabled=false"),
        (
            {"minio": {"enabled": False}, "storage": {"endpoint": "s3.example.com"}},
            "needs storage.existingSecret",
        ),
    ],
    ids=["no-storage", "both-storages", "no-credentials"],
)
def test_storage_misconfiguration_is_refused(values: Obj, expected: str) -> None:
    assert expected in render_error(values)


# -- availability and isolation -------------------------------------------------------------


def test_disruption_budgets() -> None:
    rendered = render()
    assert rendered.get("PodDisruptionBudget", WORKER)["spec"]["maxUnavailable"] == 1
    assert rendered.get("PodDisruptionBudget", ROUTER)["spec"]["minAvailable"] == 1
    single = render(OPEN)
    assert single.find("PodDisruptionBudget", ROUTER) is None
    assert single.find("PodDisruptionBudget", single.workload("worker")["metadata"]["name"])


def test_only_routers_and_other_workers_reach_workers() -> None:
    """Workers probe each other directly (session ownership: is the owner alive?)."""
    rendered = render()
    policy = rendered.get("NetworkPolicy", WORKER)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}
    peers = [selected_workloads(rendered, p["podSelector"]["matchLabels"]) for p in rule["from"]]
    assert sorted(peers) == [[ROUTER], [WORKER]]
    assert rule["ports"] == [{"port": 8081, "protocol": "TCP"}]

    minio = rendered.get("NetworkPolicy", MINIO)
    [rule] = minio["spec"]["ingress"]
    [peer] = rule["from"]
    assert selected_workloads(rendered, peer["podSelector"]["matchLabels"]) == [WORKER]
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]


def test_metrics_peers_reach_the_worker_port_only() -> None:
    rendered = render(OBSERVED)
    rules = rendered.get("NetworkPolicy", WORKER)["spec"]["ingress"]
    assert len(rules) == 2
    assert rules[1] == {"from": [PROMETHEUS_PEER], "ports": [{"port": 8081, "protocol": "TCP"}]}
    for policy in rendered.all("NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), "an ingress rule without peers admits everyone"


def test_network_policy_can_be_turned_off() -> None:
    assert render(NO_NETPOL).all("NetworkPolicy") == []


def test_prometheus_warning_when_metrics_are_blocked() -> None:
    assert "Prometheus cannot scrape" in render(HPA).notes
    assert "Prometheus cannot scrape" not in render(OBSERVED).notes


def test_pods_are_locked_down(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    for workload in rendered.workloads():
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == pod["fsGroup"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]
    worker = rendered.container("worker")
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    assert env_value(worker, "WORKSPACE_DIR") == "/workspace"
    volumes = {v["name"]: v for v in pod_spec(rendered.workload("worker"))["volumes"]}
    assert "emptyDir" in volumes[mounts["/workspace"]]


def test_resources_and_replicas() -> None:
    rendered = render()
    assert rendered.workload("worker")["spec"]["replicas"] == 5
    assert rendered.workload("router")["spec"]["replicas"] == 2
    assert rendered.container("worker")["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert rendered.container("router")["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert rendered.container("minio")["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }


def test_image() -> None:
    rendered = render()
    for component in ("worker", "router"):
        assert rendered.container(component)["image"] == f"collab:{app_version()}"
    custom = render({"image": {"repository": "ghcr.io/acme/collab", "tag": "1.2.3"}})
    assert custom.container("worker")["image"] == "ghcr.io/acme/collab:1.2.3"
    pulled = render({"imagePullSecrets": [{"name": "regcred"}]})
    assert pod_spec(pulled.workload("worker"))["imagePullSecrets"] == [{"name": "regcred"}]


# -- autoscaling ----------------------------------------------------------------------------


def test_autoscaling_is_off_by_default() -> None:
    rendered = render()
    assert rendered.all("HorizontalPodAutoscaler") == []
    assert rendered.all("ScaledObject") == []


def test_hpa_on_sessions_per_worker() -> None:
    rendered = render(HPA)
    [hpa] = rendered.all("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 30)
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "collab_sessions_active"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "150"}
    scale_down = hpa["spec"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] == 600
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 180}]
    # The HPA owns the replica count.
    assert "replicas" not in rendered.workload("worker")["spec"]
    assert rendered.all("ScaledObject") == []


def test_keda_instead_of_hpa() -> None:
    rendered = render(KEDA)
    assert rendered.all("HorizontalPodAutoscaler") == []
    [scaled] = rendered.all("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 20)
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://prometheus.monitoring.svc:9090"
    assert meta["threshold"] == "200"
    promql_parser.parse(meta["query"])
    assert "collab_sessions_active" in meta["query"]
    assert f'namespace="{NAMESPACE}"' in meta["query"]
    pattern = re.search(r'pod=~"([^"]+)"', meta["query"])
    assert pattern is not None
    assert re.fullmatch(pattern.group(1), f"{WORKER}-12")
    for other in (f"{ROUTER}-abc12-x9z", f"{WORKER}-canary-0", f"{MINIO}-0"):
        assert not re.fullmatch(pattern.group(1), other)
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["policies"][0]["value"] == 1
    assert "replicas" not in rendered.workload("worker")["spec"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"autoscaling": {"enabled": True, **KEDA["autoscaling"]}}, "enable only one"),
        ({"autoscaling": {"keda": {"enabled": True}}}, "keda.serverAddress is required"),
        (
            {"autoscaling": {"enabled": True, "minReplicas": 9, "maxReplicas": 3}},
            "is above autoscaling.maxReplicas",
        ),
    ],
    ids=["hpa-and-keda", "keda-without-prometheus", "min-above-max"],
)
def test_autoscaling_misconfiguration_is_refused(values: Obj, expected: str) -> None:
    assert expected in render_error(values)


def test_prometheus_adapter_rule() -> None:
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]
    [rule] = rules["custom"]
    promql_parser.parse(rule["seriesQuery"])
    assert "collab_sessions_active" in rule["seriesQuery"]
    assert rule["name"]["as"] == "collab_sessions_active"
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    query = rule["metricsQuery"]
    assert "<<.Series>>" in query and "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query
    for doc in ("values.yaml", "README.md"):
        assert "files/prometheus/adapter-rules.yaml" in (CHART_DIR / doc).read_text(), doc


# -- observability --------------------------------------------------------------------------


def test_service_monitors() -> None:
    assert render().all("ServiceMonitor") == []
    rendered = render(OBSERVED)
    monitors = {m["metadata"]["name"]: m for m in rendered.all("ServiceMonitor")}
    assert set(monitors) == {WORKER, ROUTER}
    for monitor in monitors.values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"


def test_metrics_annotations() -> None:
    rendered = render()
    for component in ("worker", "router"):
        annotations = rendered.workload(component)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == named_port(
            rendered.container(component), "http"
        )
    off = render({"metrics": {"podAnnotations": False}})
    assert "prometheus.io/scrape" not in off.text


def test_prometheus_rule_carries_the_alerts_file() -> None:
    assert render().all("PrometheusRule") == []
    if not ALERTS.exists():
        assert "files/prometheus/alerts.yml" in render_error(OBSERVED)
        return
    [rule] = render(OBSERVED).all("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert rule["spec"]["groups"] == groups
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert alerts
    for alert in alerts:
        promql_parser.parse(alert["expr"])


def test_dashboard_configmap() -> None:
    files = sorted(DASHBOARDS.glob("*.json")) if DASHBOARDS.is_dir() else []
    rendered = render()
    maps = [m for m in rendered.all("ConfigMap") if component_of(m) == "dashboards"]
    if not files:
        assert maps == []
        return
    [config_map] = maps
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(config_map["data"]) == {f.name for f in files}
    for file in files:
        assert json.loads(config_map["data"][file.name]) == json.loads(file.read_text())
    off = render({"metrics": {"dashboard": {"enabled": False}}})
    assert [m for m in off.all("ConfigMap") if component_of(m) == "dashboards"] == []


# -- values schema and NOTES ----------------------------------------------------------------


def _schema_node(schema: Obj, node: Obj) -> Obj:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_schema_describes_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for path, _ in walk_values(chart_values()):
        node: Obj = schema
        for part in path.split("."):
            node = _schema_node(schema, node)
            if "properties" not in node:
                assert node.get("additionalProperties") is not False, path
                break  # a free-form map (labels, resources, securityContext ...)
            assert part in node["properties"], f"{path} is not in values.schema.json"
            node = node["properties"][part]
    for name, values in VALUE_SETS.items():
        chart().validate_schema(values)  # every value set used here is valid
        assert name


@pytest.mark.parametrize(
    "values",
    [
        {"worker": {"replicas": "five"}},
        {"worker": {"replica": 3}},
        {"workers": {"replicas": 3}},
        {"config": {"logFormat": "xml"}},
        {"worker": {"port": 70000}},
        {"worker": {"drain": {"timeoutMs": -1}}},
        {"autoscaling": {"targetSessionsPerWorker": 0}},
        {"storage": {"endpoint": "http://s3.example.com:9000"}},
        {"minio": {"enabled": "yes"}},
        {"networkPolicy": {"metricsFrom": [{"podSelectr": {}}]}},
        {"metrics": {"serviceMonitor": {"interval": "often"}}},
    ],
    ids=lambda v: json.dumps(v, separators=(",", ":")),
)
def test_schema_refuses_bad_values(values: Obj) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart().validate_schema(values)
    with pytest.raises(helm_python.HelmValuesError):
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    assert [m for m in lint(values) if m["severity"] == 3]


def test_notes() -> None:
    notes = render().notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{ROUTER} 8080:8080" in notes
    assert f"get secret {AUTH_SECRET_NAME} -o jsonpath='{{.data.admin-token}}'" in notes
    assert "export COLLAB_ROUTER=http://127.0.0.1:8080 COLLAB_ADMIN_TOKEN=$(" in notes
    assert "collab workers" in notes
    assert "key auth-secret" in notes
    assert "client authentication is off" not in notes
    open_notes = render(OPEN).notes
    assert "port-forward svc/collab-router 8080:8080" in open_notes
    assert "external address" in open_notes
