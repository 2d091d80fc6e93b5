"""The one place `collab operator` speaks to the Kubernetes API (Pods, Services); kopf itself
watches and patches the CollabPools and posts the Events.

Credentials are kopf's: the same login handlers (in-cluster service account, else kubeconfig)
give a ``kopf.ConnectionInfo``; on a 401 (a rotated service-account token) they run again once.
Only the calls the operator makes exist here, so the RBAC Role of the chart is exactly their
list (``ops.kube_operator.RBAC_RULES``, checked by the chart tests and the end-to-end test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import kopf

Obj = dict[str, Any]


class KubeError(Exception):
    """The API server refused or failed a call; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Login = Callable[[], kopf.ConnectionInfo]


def _client(info: kopf.ConnectionInfo) -> httpx.AsyncClient:
    # kopf's own TLS setup: CA, client certificate (inline data too), insecure.
    verify = info.as_ssl_context() if info.server.startswith("https") else True
    headers = {
        "accept": "application/json",
        "user-agent": "collab-operator",
        **info.as_http_headers(),
    }
    return httpx.AsyncClient(
        base_url=info.server.rstrip("/"),
        headers=headers,
        verify=verify,
        timeout=30.0,
        trust_env=False,
    )


class KubeAPI:
    """Namespaced object calls: list, get, create, delete. Use as ``async with``."""

    def __init__(self, login: Login) -> None:
        self._login = login
        self._http = _client(login())

    async def __aenter__(self) -> KubeAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in (1, 2):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from None
            if response.status_code == 401 and attempt == 1:
                await self._http.aclose()
                self._http = _client(self._login())
                continue
            return response
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> KubeError:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        return KubeError(response.status_code, f"{what}: HTTP {response.status_code}: {message}")

    async def list(self, path: str, labels: dict[str, str]) -> list[Obj]:
        """Objects at a collection path, with every label in ``labels``.

        The label selector is sent and applied again here, so a server that ignores it (an
        emulator) cannot hand the operator another pool's Pods."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        response = await self._call("GET", path, params={"labelSelector": selector})
        if response.status_code != 200:
            raise self._fail(response, f"list {path}")
        items: list[Obj] = response.json().get("items") or []
        return [
            item
            for item in items
            if all(
                (item.get("metadata", {}).get("labels") or {}).get(k) == v
                for k, v in labels.items()
            )
        ]

    async def get(self, path: str) -> Obj | None:
        response = await self._call("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"get {path}")
        body: Obj = response.json()
        return body

    async def create(self, path: str, body: Obj) -> Obj:
        response = await self._call("POST", path, json=body)
        if response.status_code not in (200, 201, 202):
            raise self._fail(response, f"create {body['kind']} {body['metadata'].get('name')}")
        created: Obj = response.json()
        return created

    async def delete(self, path: str) -> bool:
        """Deletes (gracefully: the Pod's grace period applies); False when already gone."""
        response = await self._call("DELETE", path)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 202):
            raise self._fail(response, f"delete {path}")
        return True


def pods_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{quote(namespace)}/pods"
    return base if name is None else f"{base}/{quote(name)}"


def services_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{quote(namespace)}/services"
    return base if name is None else f"{base}/{quote(name)}"
