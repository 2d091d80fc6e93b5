"""The one place the CLI speaks HTTP to a router's admin API.

Every failure becomes an ``OpsError`` whose message names the cause and the fix, and whose
``exit_code`` scripts can trust: 1 = the operation failed (router unreachable, token refused,
no such worker, the worker said no), 2 = the command was used wrongly (no token configured).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from contract.env import ConfigError, env_secret

DEFAULT_ROUTER = "http://127.0.0.1:8080"
TOKEN_VARIABLE = "COLLAB_ADMIN_TOKEN"


class OpsError(Exception):
    """A command could not do its job; ``str()`` is the one line to print."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Unreachable(OpsError):
    """Nothing accepted the connection at the address: the peer is not running there."""


@dataclass(frozen=True)
class Router:
    """Where the router is and how to authenticate to it."""

    url: str
    token: str

    @classmethod
    def from_options(cls, url: str | None, env: Mapping[str, str] | None = None) -> Router:
        env = os.environ if env is None else env
        url = (url or env.get("COLLAB_ROUTER") or DEFAULT_ROUTER).rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        try:
            token = env_secret(env, TOKEN_VARIABLE)
        except ConfigError as exc:
            raise OpsError(str(exc), exit_code=2) from None
        if not token:
            raise OpsError(
                f"{TOKEN_VARIABLE} is not set: export it with the router's ADMIN_TOKEN "
                "(`collab up` prints the one it generated)",
                exit_code=2,
            )
        return cls(url, token)


class AdminClient:
    """Async admin calls against one router; use as ``async with AdminClient(router) as c``."""

    def __init__(
        self,
        router: Router,
        timeout: float = 30.0,
        *,
        peer: str = "router",
        token_fix: str = f"set {TOKEN_VARIABLE} to its ADMIN_TOKEN",
    ) -> None:
        self.router = router
        # Named in errors: "router at URL refused the token; set COLLAB_ADMIN_TOKEN …" (a
        # container's own worker is reached with this client too, with its own ADMIN_TOKEN).
        self.peer = peer
        self.token_fix = token_fix
        self._http = httpx.AsyncClient(
            base_url=router.url,
            headers={"authorization": f"Bearer {router.token}"},
            timeout=timeout,
            trust_env=False,
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, **params: str) -> dict[str, Any]:
        url, peer = self.router.url, self.peer
        try:
            response = await self._http.request(method, path, params=params or None)
        except httpx.ConnectError as exc:
            raise Unreachable(
                f"cannot reach the {peer} at {url} ({exc or 'connection refused'}); "
                "is it running?" + (" set --router or COLLAB_ROUTER" if peer == "router" else "")
            ) from None
        except httpx.HTTPError as exc:
            raise OpsError(f"{peer} at {url} did not answer: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if response.status_code == 401:
            raise OpsError(f"{peer} at {url} refused the token; {self.token_fix}")
        if response.status_code == 403:
            raise OpsError(
                f"{peer} at {url} has its admin API disabled ({error}); "
                "start it with ADMIN_TOKEN set"
            )
        if response.status_code >= 400:
            raise OpsError(error or f"{peer} at {url} answered HTTP {response.status_code}")
        if not isinstance(body, dict):
            raise OpsError(f"{peer} at {url} sent a non-JSON answer to {path}; is it a {peer}?")
        return body

    # --- the admin API, one method per route ------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self.call("GET", "/admin/status")

    async def workers(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (await self.call("GET", "/admin/workers"))["workers"]
        return rows

    async def worker(self, name: str) -> dict[str, Any]:
        return await self.call("GET", f"/admin/workers/{quote(name, safe='')}")

    async def sessions(self, worker: str | None = None) -> dict[str, Any]:
        if worker is None:
            return await self.call("GET", "/admin/sessions")
        return await self.call("GET", "/admin/sessions", worker=worker)

    async def locate(self, session: str) -> dict[str, Any]:
        return await self.call("GET", f"/admin/sessions/{quote(session, safe='')}")

    async def commit(self, session: str) -> dict[str, Any]:
        return await self.call("POST", f"/admin/sessions/{quote(session, safe='')}/commit")

    async def drain(self, worker: str) -> dict[str, Any]:
        return await self.call("POST", f"/admin/workers/{quote(worker, safe='')}/drain")

    async def undrain(self, worker: str) -> dict[str, Any]:
        return await self.call("POST", f"/admin/workers/{quote(worker, safe='')}/undrain")

    async def metrics(self) -> dict[str, Any]:
        workers: dict[str, Any] = (await self.call("GET", "/admin/metrics"))["workers"]
        return workers
