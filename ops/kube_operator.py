"""`collab operator`: kopf wiring around ``ops.reconcile``.

One kopf timer per CollabPool runs a round every ``interval`` seconds (kopf never runs two
rounds of one pool at once). Each round reads the CollabPool afresh, so it acts on the status
the previous round wrote, also after a restart; kopf writes the round's status and posts its
Events. The operator is namespaced and least-privileged: no cluster-wide scanning (kopf's
``scanning.disabled``), no peering objects (one replica, ``standalone``), and its Role is
exactly ``RBAC_RULES``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from .client import AdminClient, Router
from .collabpool import GROUP, PLURAL, VERSION
from .kube import KubeAPI, KubeError
from .reconcile import PoolState, reconcile

# Every call the operator (and kopf, as configured here) makes, as Role rules. The chart's Role
# is rendered from the same list (tests/deploy check they are equal, and the end-to-end test
# checks that every call made against the emulated API server is covered).
RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "list"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "patch", "watch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
]


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str
    interval: float
    admin_token: str
    router_url: str | None = None  # when a CollabPool has no spec.routerUrl
    liveness: str | None = None  # kopf's health endpoint, e.g. http://0.0.0.0:8080/healthz


def login() -> kopf.ConnectionInfo:
    """In a Pod: its service account; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings, logger=logging.getLogger("login"))
    info = info or kopf.login_with_kubeconfig(settings=settings, logger=logging.getLogger("login"))
    if info is None:
        raise kopf.LoginError(
            "no Kubernetes credentials: run in a Pod with a service account, or set KUBECONFIG"
        )
    return info


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    pools: dict[str, PoolState] = {}

    @kopf.on.login(registry=registry)
    def credentials(**_: Any) -> kopf.ConnectionInfo:
        return login()

    @kopf.timer(GROUP, VERSION, PLURAL, interval=config.interval, registry=registry)
    async def collabpool_round(
        body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any
    ) -> None:
        meta = body.metadata
        namespace, name = str(meta.namespace), str(meta.name)
        async with KubeAPI(login) as kube:
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
            fresh = await kube.get(path)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return  # deleted: Kubernetes' garbage collector removes the owned Pods
            spec: Mapping[str, Any] = fresh.get("spec") or {}
            url = spec.get("routerUrl") or config.router_url
            if not url:
                kopf.warn(body, reason="NoRouter", message="set spec.routerUrl")
                return
            state = pools.setdefault(f"{namespace}/{name}", PoolState())
            async with AdminClient(Router(str(url).rstrip("/"), config.admin_token), 10) as client:
                try:
                    report = await reconcile(fresh, kube, client, state)
                except KubeError as exc:
                    kopf.warn(body, reason="KubernetesAPIError", message=str(exc))
                    logger.warning("round failed: %s", exc)
                    return
        patch.status.update(report.status)
        for kind, reason, message in report.events:
            kopf.event(body, type=kind, reason=reason, message=message)
            log = logger.warning if kind == "Warning" else logger.info
            log("%s: %s", reason, message)

    return registry


def settings() -> kopf.OperatorSettings:
    result = kopf.OperatorSettings()
    result.scanning.disabled = True  # namespaced: no cluster-wide CRD or namespace watching
    result.posting.level = logging.INFO  # the decisions are Events too
    result.watching.server_timeout = 300
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    return result


async def run(config: OperatorConfig, stop: asyncio.Event | None = None) -> None:
    """Runs until SIGTERM/SIGINT (kopf's own handlers) or ``stop``."""
    await kopf.operator(
        registry=build_registry(config),
        settings=settings(),
        standalone=True,
        namespaces=[config.namespace],
        liveness_endpoint=config.liveness,
        stop_flag=stop,
    )
