"""charts/collab in worker.mode=operator (the default): the CollabPool CRD, the operator with its
Role, the CollabPool from values, and the worker Pods and Service the operator makes from that
CollabPool (built with the operator's own code, ops.collabpool) — all rendered offline and
validated against the Kubernetes 1.31 schemas; the CollabPool against its CRD's schema.
"""

from __future__ import annotations

import math
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ops.collabpool import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    PoolSpec,
    headless_service,
    worker_pod,
)
from ops.kube_operator import RBAC_RULES
from ops.scaling_policy import Buffer
from tests.deploy.chart_support import (
    CHART_DIR,
    CLUSTER_DOMAIN,
    KUBE_VERSION,
    NAMESPACE,
    POD_IP,
    RELEASE,
    ROOT,
    SECRET_ENV,
    Obj,
    Rendered,
    env_of,
    lint,
    render,
    render_error,
    resolved_env,
    selects,
)
from tests.deploy.config_names import worker_env_names
from worker.settings import Settings

pytestmark = pytest.mark.deploy

POOL = f"{RELEASE}-worker"
OPERATOR = f"{RELEASE}-operator"
VALUE_SETS: dict[str, Obj] = {
    "default": {},
    "external": {
        "minio": {"enabled": False},
        "storage": {
            "endpoint": "s3.example.com",
            "port": 443,
            "secure": True,
            "existingSecret": "collab-s3",
        },
        "auth": {"existingSecret": "collab-tokens"},
    },
    "open": {"auth": {"clientAuth": False}, "worker": {"port": 9091}},
    "tuned": {
        "pool": {
            "minWorkers": 3,
            "maxWorkers": 12,
            "sessionsPerWorker": 150,
            "bufferWorkers": 0,
            "bufferSessions": "20%",
            "maxConcurrentDrains": 2,
        },
        "operator": {"intervalSeconds": 2},
        "worker": {
            "extraEnv": [{"name": "COMMIT_AUTHOR_EMAIL", "value": "bot@example.com"}],
            "nodeSelector": {"pool": "collab"},
        },
    },
}


@pytest.fixture(params=sorted(VALUE_SETS), ids=sorted(VALUE_SETS))
def case(request: pytest.FixtureRequest) -> tuple[Obj, Rendered]:
    values = VALUE_SETS[request.param]
    return values, render(values)


def pool_of(rendered: Rendered) -> Obj:
    [pool] = rendered.all(KIND)
    # As the API server hands it to the operator.
    return {**pool, "metadata": {**pool["metadata"], "uid": "4f7c0e0e-0000-4000-8000-000000000001"}}


def pod_of(rendered: Rendered, name: str = f"{POOL}-x7k2p") -> Obj:
    pool = pool_of(rendered)
    return worker_pod(pool, PoolSpec.parse(pool["spec"]), name)


def crd() -> Obj:
    """The CRD from the chart's crds/ (Helm installs it before the templates; not rendered)."""
    [path] = sorted((CHART_DIR / "crds").glob("*.yaml"))
    loaded: Obj = yaml.safe_load(path.read_text())
    return loaded


def crd_schema() -> Obj:
    [version] = crd()["spec"]["versions"]
    schema: Obj = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    assert lint(VALUE_SETS[name]) == []
    assert lint(VALUE_SETS[name], strict=True) == []


def test_every_object_is_valid_kubernetes_and_the_pool_matches_its_crd(
    case: tuple[Obj, Rendered],
) -> None:
    _, rendered = case
    for obj in rendered.objects:
        if obj["kind"] == KIND:
            jsonschema.validate(obj, crd_schema())
        elif obj["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    # What the operator makes from the pool is valid too.
    kubernetes_validate.validate(pod_of(rendered), KUBE_VERSION, strict=True)
    pool = pool_of(rendered)
    service = headless_service(pool, PoolSpec.parse(pool["spec"]))
    kubernetes_validate.validate(service, KUBE_VERSION, strict=True)


def test_operator_mode_objects() -> None:
    rendered = render()
    names = set(rendered.names())
    assert {
        (KIND, POOL),
        ("Deployment", OPERATOR),
        ("ServiceAccount", OPERATOR),
        ("Role", OPERATOR),
        ("RoleBinding", OPERATOR),
        ("Deployment", f"{RELEASE}-router"),
    } <= names
    kinds = {kind for kind, _ in names}
    assert (
        "StatefulSet" not in {k for k, n in names if n == POOL} and ("Service", POOL) not in names
    )
    assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject", "ClusterRole"}
    statefulset = render({"worker": {"mode": "statefulset"}})
    assert not {k for k, _ in statefulset.names()} & {KIND, "Role"}


def test_the_crd_is_valid_and_what_the_operator_reads() -> None:
    definition = crd()
    kubernetes_validate.validate(definition, KUBE_VERSION, strict=True)
    assert definition["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert "{{" not in (CHART_DIR / "crds").joinpath(f"{PLURAL}.{GROUP}.yaml").read_text()
    spec = definition["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"]) == (GROUP, KIND, PLURAL)
    assert spec["scope"] == "Namespaced"
    [version] = spec["versions"]
    assert f"{GROUP}/{version['name']}" == API_VERSION
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == ".status.workers.ready"
    assert columns["Desired"] == ".status.desiredWorkers"
    assert columns["Sessions"] == ".status.sessions"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for key in (
        "observedGeneration",
        "desiredWorkers",
        "sessions",
        "connections",
        "workers",
        "lastDecision",
        "drains",
        "conditions",
    ):
        assert key in status, key
    assert set(status["workers"]["properties"]) >= {"starting", "ready", "draining"}
    schema = version["schema"]["openAPIV3Schema"]
    bad = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "p"},
        "spec": {"image": "x", "buffer": {"sessions": 1, "workers": 1}},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_role_is_exactly_what_the_operator_calls() -> None:
    rendered = render()
    role = rendered.get("Role", OPERATOR)
    assert role["rules"] == RBAC_RULES
    binding = rendered.get("RoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": OPERATOR,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    deployment = rendered.get("Deployment", OPERATOR)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == OPERATOR and spec["automountServiceAccountToken"] is True
    # Only the operator holds an API token: the routers and the worker Pods mount none.
    router = rendered.get("Deployment", f"{RELEASE}-router")["spec"]["template"]["spec"]
    assert router["automountServiceAccountToken"] is False
    assert pod_of(rendered)["spec"]["automountServiceAccountToken"] is False
    assert pod_of(rendered)["spec"]["serviceAccountName"] != OPERATOR


def test_the_operator_deployment(case: tuple[Obj, Rendered]) -> None:
    values, rendered = case
    deployment = rendered.get("Deployment", OPERATOR)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    interval = values.get("operator", {}).get("intervalSeconds", 5)
    assert container["args"] == [
        "operator",
        "--interval",
        str(interval),
        "--liveness",
        "http://0.0.0.0:8080/healthz",
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    env = env_of(container)
    pool = pool_of(rendered)
    token = env["COLLAB_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == pool["spec"]["adminTokenSecretRef"]
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == [
        "ALL"
    ]


def test_the_pool_points_at_the_routers_and_the_routers_at_its_service(
    case: tuple[Obj, Rendered],
) -> None:
    _, rendered = case
    pool = pool_of(rendered)
    spec = PoolSpec.parse(pool["spec"])
    router = rendered.get("Deployment", f"{RELEASE}-router")
    [container] = router["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = headless_service(pool, spec)
    assert env["WORKERS_DNS"] == f"{service['metadata']['name']}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
    assert int(env["WORKERS_PORT"]) == spec.port == service["spec"]["ports"][0]["port"]
    router_service = rendered.get("Service", f"{RELEASE}-router")
    port = router_service["spec"]["ports"][0]["port"]
    assert spec.router_url == f"http://{RELEASE}-router.{NAMESPACE}.svc.{CLUSTER_DOMAIN}:{port}"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert selects(service["spec"]["selector"], pod_of(rendered)["metadata"]["labels"])


def test_the_worker_pods_run_what_the_code_accepts(case: tuple[Obj, Rendered]) -> None:
    values, rendered = case
    pod = pod_of(rendered, f"{POOL}-x7k2p")
    [container] = pod["spec"]["containers"]
    assert set(env_of(container)) <= worker_env_names() | {"COMMIT_AUTHOR_EMAIL"}
    env = resolved_env(rendered, container, f"{POOL}-x7k2p")
    settings = Settings.from_env(env)
    assert settings.worker_id == f"{POOL}-x7k2p"
    assert env["ADVERTISE_HOST"] == POD_IP
    assert settings.storage.minio_endpoint and settings.admin_token
    client_auth = values.get("auth", {}).get("clientAuth", True)
    assert (settings.auth_secret is not None) == client_auth
    for name, entry in env_of(container).items():
        if name in SECRET_ENV:
            assert "value" not in entry and entry["valueFrom"]["secretKeyRef"], name


def test_the_worker_pods_are_locked_down_and_drain(case: tuple[Obj, Rendered]) -> None:
    _, rendered = case
    pod = pod_of(rendered)
    spec = pod["spec"]
    [container] = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert spec["restartPolicy"] == "Always"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[:3] == ["collab", "self-drain", "--timeout"]
    drain_ms = int(next(e["value"] for e in container["env"] if e["name"] == "DRAIN_TIMEOUT_MS"))
    assert (
        spec["terminationGracePeriodSeconds"] >= int(pre_stop[3]) + math.ceil(drain_ms / 1000) + 5
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["metadata"]["ownerReferences"][0]["kind"] == KIND
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True


def test_network_policy_and_disruption_budget_select_the_operators_pods() -> None:
    rendered = render()
    labels = pod_of(rendered)["metadata"]["labels"]
    policy = rendered.get("NetworkPolicy", POOL)
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    # Workers reach each other (session ownership probes), as well as the routers do.
    [rule] = policy["spec"]["ingress"]
    assert any(selects(p["podSelector"]["matchLabels"], labels) for p in rule["from"])
    pdb = rendered.get("PodDisruptionBudget", POOL)
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] == 1  # pool.minWorkers 2, less one
    assert render({"pool": {"minWorkers": 1}}).find("PodDisruptionBudget", POOL) is None


def test_a_changed_image_changes_the_template_hash_and_nothing_else_does() -> None:
    one = pod_of(render({"image": {"tag": "1.0.0"}}))
    two = pod_of(render({"image": {"tag": "1.0.1"}}))
    again = pod_of(render({"image": {"tag": "1.0.0"}}), f"{POOL}-other")
    label = "collab.dev/template-hash"
    assert one["metadata"]["labels"][label] != two["metadata"]["labels"][label]
    assert one["metadata"]["labels"][label] == again["metadata"]["labels"][label]


@pytest.mark.parametrize(
    ("pool", "buffer"),
    [
        ({}, {"workers": 1}),
        ({"bufferSessions": "20%"}, {"sessions": "20%"}),
        ({"bufferSessions": 50}, {"sessions": 50}),
        ({"bufferWorkers": 2}, {"workers": 2}),
        ({"bufferWorkers": "25%"}, {"workers": "25%"}),
        ({"bufferWorkers": 0, "bufferSessions": "20%"}, {"sessions": "20%"}),
        ({"bufferWorkers": None, "bufferSessions": 30}, {"sessions": 30}),
        ({"bufferSessions": 0}, {"workers": 1}),
        ({"bufferWorkers": 0}, None),
    ],
    ids=lambda v: repr(v),
)
def test_one_buffer_value_alone_is_enough(pool: Obj, buffer: Obj | None) -> None:
    """`--set pool.bufferSessions=20%` needs no `bufferWorkers=0` beside it; with neither set the
    pool keeps one spare worker, and 0 turns the buffer off."""
    spec = pool_of(render({"pool": pool}))["spec"]
    assert spec.get("buffer") == buffer
    # And the operator reads it as that buffer.
    [(unit, amount)] = (buffer or {"sessions": 0}).items()
    assert PoolSpec.parse(spec).buffer == Buffer.parse(amount, unit)


def test_the_documented_scale_command_works_with_either_buffer() -> None:
    """docs/deploy.md's `helm upgrade ... --set pool.bufferWorkers=2  # or pool.bufferSessions=20%`,
    as written and with the alternative its comment names (the values `--set` gives Helm)."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    [command] = re.findall(r"\nhelm upgrade collab [^\n]*--reuse-values \\\n(?:.*\\\n)*.*\n", text)
    [alternative] = re.findall(r"# or (pool\.bufferSessions=\S+)", command)
    sets = re.findall(r"--set (\S+)", command)
    assert "pool.bufferWorkers=2" in sets
    for chosen in (sets, [s for s in sets if "bufferWorkers" not in s] + [alternative]):
        values: Obj = {}
        for item in chosen:
            key, _, raw = item.partition("=")
            *parents, leaf = key.split(".")
            node = values
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = int(raw) if raw.isdigit() else raw  # as Helm's --set types them
        spec = pool_of(render(values))["spec"]
        assert spec["sessionsPerWorker"] == values["pool"]["sessionsPerWorker"]
        assert spec["buffer"] == (
            {"sessions": "20%"} if "bufferSessions" in values["pool"] else {"workers": 2}
        )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"autoscaling": {"enabled": True}}, "the operator scales the pool itself"),
        ({"pool": {"minWorkers": 5, "maxWorkers": 3}}, "pool.minWorkers (5) is above"),
        ({"pool": {"bufferWorkers": 1, "bufferSessions": 10}}, "both set"),
    ],
    ids=["hpa-with-operator", "min-above-max", "two-buffers"],
)
def test_operator_misconfiguration_is_refused(values: Obj, expected: str) -> None:
    assert expected in render_error(values)


def test_notes_show_the_pool() -> None:
    notes = render().notes
    assert f"CollabPool {POOL}" in notes
    assert f"kubectl -n {NAMESPACE} get collabpools" in notes
