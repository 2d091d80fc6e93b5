"""An emulated Kubernetes API server for the operator tests: kmock's KubernetesEmulator plus
the API-server behaviours kopf and the operator rely on.

kmock's emulator stores objects and serves lists and watch streams, but (v0.8) keeps objects
exactly as posted. Against it as it is, kopf fails: every JSON patch kopf sends starts with a
``test`` of ``metadata.resourceVersion``, which the emulator never sets, and kopf's Events
(``generateName``) collide on a missing name. kmock's documentation asks for a subclass in
such cases; this one adds, as a real API server does:

* ``metadata``: ``uid``, ``resourceVersion`` (bumped on every change), ``creationTimestamp``,
  ``generation`` (bumped when ``spec`` changes), names from ``generateName``;
* the ``status`` subresource for CollabPools and Pods: a patch of ``…/status`` changes only
  ``status``, a patch of the object never does;
* JSON patches (with their ``test`` operations) and merge patches (``null`` deletes);
* a log of every call as (verb, resource): the end-to-end test checks the operator's Role
  against it.

Label selectors are still ignored by the emulator (the operator filters again itself).
"""

from __future__ import annotations

import copy
import itertools
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock

Obj = dict[str, Any]

WITH_STATUS = frozenset({"collabpools", "pods"})

RESOURCES = {
    "v1/pods": kmock.ResourceInfo(
        kind="Pod", singular="pod", namespaced=True, subresources={"status"}
    ),
    "v1/services": kmock.ResourceInfo(kind="Service", singular="service", namespaced=True),
    "v1/events": kmock.ResourceInfo(kind="Event", singular="event", namespaced=True),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", singular="secret", namespaced=True),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", singular="namespace", namespaced=False),
    "collab.dev/v1alpha1/collabpools": kmock.ResourceInfo(
        kind="CollabPool",
        singular="collabpool",
        namespaced=True,
        subresources={"status"},
        shortnames={"cpool"},
    ),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def merge_patch(value: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(value) if isinstance(value, Mapping) else {}
    for key, item in patch.items():
        if item is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), item)
    return result


class ApiServer(kmock.KubernetesEmulator):
    """See the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.versions = itertools.count(1)
        # (verb, "group/resource[/sub]", who): who is "operator" for kopf's and the operator's
        # own calls (by User-Agent), "test" for the kubelet's and the test's.
        self.calls: list[tuple[str, str, str]] = []
        for key, info in RESOURCES.items():
            info.verbs.update(VERBS)
            self.resources[key] = info

    def _now(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or request.action is None or resource.plural is None:
            return await super()._handle(request)
        plural = str(resource.plural) + (f"/{request.subresource}" if request.subresource else "")
        action = request.action.value.lower()
        verb = {"update": "patch", "fetch": "get"}.get(action, action)
        if request.method == kmock.method.PUT:
            verb = "update"
        agent = request.headers.get("User-Agent", "")
        who = "operator" if agent.startswith(("kopf/", "collab-operator")) else "test"
        self.calls.append((verb, f"{resource.group}/{plural}", who))
        if request.action == kmock.action.CREATE:
            data = copy.deepcopy(request.data)
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(4)
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(self.versions)),
                creationTimestamp=self._now(),
                generation=1,
            )
            # kmock matches reactions against the requests it logged, by identity.
            evolved = attrs.evolve(request, data=data)
            self._requests[[r is request for r in self._requests].index(True)] = evolved
            request = evolved
        elif request.action == kmock.action.UPDATE and request.name is not None:
            return await self._patch(request, str(resource.plural))
        return await super()._handle(request)

    async def _patch(self, request: kmock.Request, plural: str) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return self._status(404, "NotFound", f"{plural} {request.name} not found")
            old = self._objects[key].raw
            try:
                if isinstance(request.data, list):
                    new = jsonpatch.apply_patch(copy.deepcopy(old), request.data)
                else:
                    new = merge_patch(old, request.data)
            except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
                return self._status(409, "Conflict", str(exc))
            if plural in WITH_STATUS:
                if request.subresource == "status":
                    new = {**old, "status": new.get("status")}
                else:
                    new["status"] = old.get("status")
                new = {k: v for k, v in new.items() if v is not None}
            meta = new["metadata"]
            meta["resourceVersion"] = str(next(self.versions))
            if new.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            gone = meta.get("deletionTimestamp") and not meta.get("finalizers")
            self._objects[key].history.append(new)
            if gone:
                self._objects[key].delete()
            event = "DELETED" if gone else "MODIFIED"
            await self._buses[request.resource].put({"type": event, "object": new})
        return aiohttp.web.json_response(new)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> aiohttp.web.StreamResponse:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
        body.update(reason=reason, message=message)
        return aiohttp.web.json_response(body, status=code)


@asynccontextmanager
async def api_server() -> AsyncIterator[tuple[ApiServer, str]]:
    """The emulator on a free loopback port: (server, base URL)."""
    async with ApiServer() as server, kmock.Server(server) as http:
        yield server, str(http.url).rstrip("/")


def kubeconfig(url: str, namespace: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
  - name: emulated
    cluster: {{server: "{url}"}}
users:
  - name: operator
    user: {{token: test-token}}
contexts:
  - name: emulated
    context: {{cluster: emulated, user: operator, namespace: {namespace}}}
current-context: emulated
"""
