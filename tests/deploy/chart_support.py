"""Render charts/collab with the real Helm engine (helm-python-sdk) and pick objects out of it.

Everything the chart tests need to load, render, lint and query manifests lives here, so the
tests read as assertions about objects.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "collab"
RELEASE = "collab"
NAMESPACE = "collab-test"
KUBE_VERSION = "1.31.0"
CLUSTER_DOMAIN = "cluster.local"
POD_IP = "10.42.0.7"  # what status.podIP resolves to in resolved_env

# Custom resources: no offline schema; their key fields are asserted by the tests instead.
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule", "ScaledObject"})
WORKLOAD_KINDS = frozenset({"StatefulSet", "Deployment"})
# Env variables that carry credentials: only ever through secretKeyRef.
SECRET_ENV = frozenset(
    {
        "ADMIN_TOKEN",
        "AUTH_SECRET",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
    }
)
STABLE_SELECTOR_KEYS = frozenset(
    {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
)

Obj = dict[str, Any]


@cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def chart_values() -> Obj:
    """The chart's own values.yaml."""
    loaded: Obj = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return loaded


def app_version() -> str:
    return str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"])


@dataclass(frozen=True)
class Rendered:
    """One render: the manifests by template path and every object in them."""

    manifests: Mapping[str, str]
    objects: tuple[Obj, ...]

    @property
    def notes(self) -> str:
        return next(text for path, text in self.manifests.items() if path.endswith("NOTES.txt"))

    @property
    def text(self) -> str:
        """All manifests but NOTES, concatenated."""
        return "\n".join(t for p, t in self.manifests.items() if not p.endswith("NOTES.txt"))

    def all(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> Obj | None:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) <= 1, f"{len(found)} {kind} objects named {name}"
        return found[0] if found else None

    def get(self, kind: str, name: str) -> Obj:
        found = self.find(kind, name)
        assert found is not None, f"no {kind} {name}; rendered: {self.names()}"
        return found

    def names(self) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in self.objects)

    def workloads(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in WORKLOAD_KINDS]

    def workload(self, component: str) -> Obj:
        found = [w for w in self.workloads() if component_of(w) == component]
        assert len(found) == 1, f"{len(found)} workloads of component {component}"
        return found[0]

    def container(self, component: str) -> Obj:
        containers = pod_spec(self.workload(component))["containers"]
        assert len(containers) == 1
        container: Obj = containers[0]
        return container

    def secret_data(self, name: str) -> dict[str, str]:
        """A rendered Secret's data, decoded."""
        secret = self.get("Secret", name)
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _parse(manifests: Mapping[str, str]) -> tuple[Obj, ...]:
    objects: list[Obj] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path}: a document that is not a mapping"
            objects.append(doc)
    return tuple(objects)


@cache
def _render_cached(values_json: str, name: str, namespace: str) -> Rendered:
    manifests = chart().render(json.loads(values_json), name=name, namespace=namespace)
    return Rendered(manifests=manifests, objects=_parse(manifests))


def render(
    values: Obj | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> Rendered:
    """Render offline (no cluster: lookup returns nothing). Cached per distinct input."""
    return _render_cached(json.dumps(values or {}, sort_keys=True), name, namespace)


def render_chart(
    values: Obj | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
) -> list[Obj]:
    """Every object the chart renders for ``values`` (for tests outside test_chart.py)."""
    return list(render(values, name=name, namespace=namespace).objects)


def render_fresh(values: Obj | None = None) -> Rendered:
    """Render again, bypassing the cache (random generated values differ)."""
    manifests = chart().render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return Rendered(manifests=manifests, objects=_parse(manifests))


def render_error(values: Obj) -> str:
    """The message Helm refuses these values with; fails the test when it renders."""
    try:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    except helm_python.HelmError as exc:
        return str(exc)
    raise AssertionError(f"the chart rendered with values that must be refused: {values}")


def lint(values: Obj | None = None, *, strict: bool = False) -> list[Obj]:
    """`helm lint` findings of severity warning (2) and error (3)."""
    report = helm_python.lint(CHART_DIR, values or {}, strict=strict, namespace=NAMESPACE)
    return [m for m in report["messages"] if m["severity"] >= 2] + [
        {"severity": 3, "path": "", "error": e} for e in report.get("errors") or []
    ]


# -- object helpers -------------------------------------------------------------------------


def component_of(obj: Obj) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selected_workloads(rendered: Rendered, selector: Mapping[str, str]) -> list[str]:
    """Names of the workloads whose pods this label selector picks."""
    return sorted(
        w["metadata"]["name"] for w in rendered.workloads() if selects(selector, pod_labels(w))
    )


def env_of(container: Obj) -> dict[str, Obj]:
    entries = container.get("env") or []
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names in {container['name']}: {names}"
    return {e["name"]: e for e in entries}


def env_value(container: Obj, name: str) -> str:
    entry = env_of(container)[name]
    assert "value" in entry, f"{name} has no literal value: {entry}"
    return str(entry["value"])


def named_port(container: Obj, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
    assert name in ports, f"container {container['name']} has no port named {name}: {ports}"
    return int(ports[name])


def secret_refs(rendered: Rendered) -> list[tuple[str, str, str, str]]:
    """(container, env name, secret name, key) for every secretKeyRef in every workload."""
    refs = []
    for workload in rendered.workloads():
        for container in pod_spec(workload)["containers"]:
            for entry in container.get("env") or []:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.append((container["name"], entry["name"], ref["name"], ref["key"]))
    return refs


def walk_values(values: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, value
        if isinstance(value, Mapping):
            yield from walk_values(value, path)


def resolved_env(rendered: Rendered, container: Obj, pod: str) -> dict[str, str]:
    """The environment the container would get: fieldRefs from the pod, secretKeyRefs from the
    rendered Secret (an existing secret stands in with a placeholder value)."""
    env: dict[str, str] = {}
    for name, entry in env_of(container).items():
        source = entry.get("valueFrom") or {}
        if "value" in entry:
            env[name] = str(entry["value"])
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            assert path in ("metadata.name", "metadata.namespace", "status.podIP"), entry
            env[name] = {"metadata.name": pod, "metadata.namespace": NAMESPACE}.get(path, POD_IP)
        else:
            ref = source["secretKeyRef"]
            found = rendered.find("Secret", ref["name"])
            env[name] = rendered.secret_data(ref["name"])[ref["key"]] if found else "x" * 32
    return env
