"""A CollabPool resource: its spec as settings, and the worker Pods and headless Service the
operator makes from it (pure: no I/O; the chart tests build Pods from a rendered CollabPool
with the same functions).

The CRD (charts/collab/templates/collabpool-crd.yaml) is the schema of record; ``PoolSpec``
reads the fields the operator acts on, with the CRD's defaults, and refuses what the schema
cannot express (min above max) with a message naming the field.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .scaling_policy import Buffer, Policy

GROUP = "collab.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CollabPool"
PLURAL = "collabpools"

POOL_LABEL = f"{GROUP}/pool"
HASH_LABEL = f"{GROUP}/template-hash"
MANAGED_BY = "collab-operator"

Obj = dict[str, Any]


class SpecError(ValueError):
    """The spec asks for something the operator cannot do; ``str()`` names the field."""


@dataclass(frozen=True)
class PoolSpec:
    """What the operator reads from ``spec`` (defaults as in the CRD)."""

    image: str
    storage: Mapping[str, Any]
    admin_token: Mapping[str, Any]
    min_workers: int = 1
    max_workers: int = 10
    sessions_per_worker: int = 200
    buffer: Buffer = field(default_factory=Buffer)
    scale_down_delay_s: float = 300
    drain_timeout_s: float = 120
    max_concurrent_drains: int = 1
    router_url: str | None = None
    service_name: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> PoolSpec:
        try:
            image = str(spec["image"])
            storage = spec["storage"]
            admin = spec["adminTokenSecretRef"]
        except KeyError as exc:
            raise SpecError(f"spec.{exc.args[0]} is required") from None
        minimum = int(spec.get("minWorkers", 1))
        maximum = int(spec.get("maxWorkers", 10))
        if minimum > maximum:
            raise SpecError(f"spec.minWorkers ({minimum}) is above spec.maxWorkers ({maximum})")
        buffer_spec = spec.get("buffer") or {}
        if len(buffer_spec) > 1:
            raise SpecError("spec.buffer: give sessions or workers, not both")
        try:
            buffer = (
                Buffer.parse(buffer_spec["workers"], "workers")
                if "workers" in buffer_spec
                else Buffer.parse(buffer_spec.get("sessions", 0), "sessions")
            )
        except ValueError as exc:
            raise SpecError(f"spec.buffer: {exc}") from None
        return cls(
            image=image,
            storage=storage,
            admin_token=admin,
            min_workers=minimum,
            max_workers=maximum,
            sessions_per_worker=int(spec.get("sessionsPerWorker", 200)),
            buffer=buffer,
            scale_down_delay_s=float(spec.get("scaleDownDelaySeconds", 300)),
            drain_timeout_s=float(spec.get("drainTimeoutSeconds", 120)),
            max_concurrent_drains=int(spec.get("maxConcurrentDrains", 1)),
            router_url=spec.get("routerUrl") or None,
            service_name=spec.get("serviceName") or None,
            raw=spec,
        )

    @property
    def policy(self) -> Policy:
        return Policy(
            self.sessions_per_worker,
            self.min_workers,
            self.max_workers,
            self.scale_down_delay_s,
            self.buffer,
        )

    @property
    def port(self) -> int:
        return int(self.raw.get("port", 8081))


def service_name(pool: str, spec: PoolSpec) -> str:
    return spec.service_name or f"{pool}-workers"


def owner_reference(pool: Mapping[str, Any]) -> Obj:
    meta = pool["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _secret_env(name: str, ref: Mapping[str, Any]) -> Obj:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}},
    }


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


# Set by the operator; spec.env cannot replace them (the pod's identity on the ring, the
# address other workers probe it at, and the port every probe and Service uses).
IDENTITY_ENV = ("PORT", "WORKER_ID", "ADVERTISE_HOST")


def worker_env(spec: PoolSpec) -> list[Obj]:
    storage = spec.storage
    env: list[Obj] = [
        {"name": "PORT", "value": str(spec.port)},
        # The Pod name is the worker's name on the ring (WORKER_ID), unique for its life.
        _field_env("WORKER_ID", "metadata.name"),
        # Where other workers reach this one (session ownership probes, worker to worker).
        _field_env("ADVERTISE_HOST", "status.podIP"),
        {"name": "LOG_FORMAT", "value": "json"},
        {"name": "WORKSPACE_DIR", "value": "/workspace"},
        {"name": "MINIO_ENDPOINT", "value": str(storage["endpoint"])},
        {"name": "MINIO_PORT", "value": str(int(storage.get("port", 9000)))},
        {"name": "MINIO_BUCKET", "value": str(storage.get("bucket", "sessions"))},
        {"name": "MINIO_SECURE", "value": "true" if storage.get("secure") else "false"},
        _secret_env("MINIO_ACCESS_KEY", storage["accessKeySecretRef"]),
        _secret_env("MINIO_SECRET_KEY", storage["secretKeySecretRef"]),
        _secret_env("ADMIN_TOKEN", spec.admin_token),
    ]
    if spec.raw.get("authSecretRef"):
        env.append(_secret_env("AUTH_SECRET", spec.raw["authSecretRef"]))
    extra = {e["name"]: e for e in spec.raw.get("env") or [] if e["name"] not in IDENTITY_ENV}
    merged = [extra.pop(e["name"], e) for e in env]
    return merged + list(extra.values())


def pod_template(pool: Mapping[str, Any], spec: PoolSpec) -> Obj:
    """The worker Pod without its name: what the template hash covers."""
    raw = spec.raw
    template = raw.get("podTemplate") or {}
    extra_meta = template.get("metadata") or {}
    labels = {
        **(extra_meta.get("labels") or {}),
        POOL_LABEL: pool["metadata"]["name"],
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    drain_s = int(raw.get("preStopTimeoutSeconds", 60))
    container: Obj = {
        "name": "worker",
        "image": spec.image,
        "imagePullPolicy": raw.get("imagePullPolicy", "IfNotPresent"),
        "args": ["worker"],
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": worker_env(spec),
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        # The operator drains a worker before deleting its Pod; this hook covers every other
        # way a Pod stops (node drain, eviction, kubectl delete) the same way.
        "lifecycle": {
            "preStop": {"exec": {"command": ["collab", "self-drain", "--timeout", str(drain_s)]}}
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "workspace", "mountPath": "/workspace"},
        ],
    }
    if raw.get("resources"):
        container["resources"] = raw["resources"]
    if raw.get("containerSecurityContext"):
        container["securityContext"] = raw["containerSecurityContext"]
    workspace: Obj = {}
    if raw.get("workspaceSizeLimit"):
        workspace["sizeLimit"] = raw["workspaceSizeLimit"]
    pod_spec: Obj = {
        **(template.get("spec") or {}),
        "restartPolicy": "Always",
        "subdomain": service_name(pool["metadata"]["name"], spec),
        "terminationGracePeriodSeconds": int(raw.get("terminationGracePeriodSeconds", 90)),
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {}},
            {"name": "workspace", "emptyDir": workspace},
        ],
    }
    metadata: Obj = {"labels": labels}
    if extra_meta.get("annotations"):
        metadata["annotations"] = dict(extra_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def template_hash(template: Mapping[str, Any]) -> str:
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# Kubernetes' own alphabet for generated name suffixes (no vowels, no look-alikes).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def new_pod_name(pool: str) -> str:
    """A new worker name, never reused: ``<pool>-<5 random characters>`` (a ring member that
    left must not come back as a different process under the same name)."""
    return f"{pool[:57]}-{''.join(secrets.choice(_ALPHABET) for _ in range(5))}"


def worker_pod(pool: Mapping[str, Any], spec: PoolSpec, name: str) -> Obj:
    pod = pod_template(pool, spec)
    digest = template_hash(pod)
    meta = pod["metadata"]
    meta["labels"][HASH_LABEL] = digest
    meta.update(
        name=name,
        namespace=pool["metadata"]["namespace"],
        ownerReferences=[owner_reference(pool)],
    )
    pod["spec"]["hostname"] = name
    return pod


def headless_service(pool: Mapping[str, Any], spec: PoolSpec) -> Obj:
    name = pool["metadata"]["name"]
    labels = ((spec.raw.get("podTemplate") or {}).get("metadata") or {}).get("labels") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name, spec),
            "namespace": pool["metadata"]["namespace"],
            "labels": {**labels, POOL_LABEL: name, "app.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "clusterIP": "None",
            # Routers must see starting and draining workers too: they check /readyz themselves
            # and keep a draining worker known (not on the ring) while its sessions move away.
            "publishNotReadyAddresses": True,
            "selector": {POOL_LABEL: name},
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
