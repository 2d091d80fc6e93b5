"""Commands a container runs against its own process: ``health`` (the image's HEALTHCHECK) and
``self-drain`` (the Kubernetes preStop hook of a worker).

Both talk to 127.0.0.1:$PORT only. ``self-drain`` is the patient drain: it asks the worker to
drain through its admin API and waits, while the worker repeats drain rounds (a session that
cannot be flushed during a storage outage is retried), until no session is left. SIGTERM's own
drain, bounded by DRAIN_TIMEOUT_MS, then finds nothing to do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Annotated, Any

import httpx
import typer

from contract.env import ConfigError, env_secret, rotating_values

from .client import AdminClient, OpsError, Router, Unreachable
from .display import run_command
from .draining import sessions_left, wait_drained

app = typer.Typer()

# The defaults of `collab worker` and `collab router`: with PORT unset, either may be running.
DEFAULT_PORTS = (8081, 8080)

PortOption = Annotated[
    int | None,
    typer.Option(help="Port of this container's server (env PORT; unset: 8081, then 8080)."),
]


def _ports(port: int | None, env: Mapping[str, str]) -> tuple[int, ...]:
    if port is not None:
        return (port,)
    raw = env.get("PORT", "").strip()
    if not raw:
        return DEFAULT_PORTS
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise OpsError(f"PORT must be a port number, got {raw!r}", exit_code=2)
    return (int(raw),)


@app.command()
def health(
    port: PortOption = None,
    ready: Annotated[
        bool, typer.Option("--ready", help="Check /readyz (ready to take sessions) instead.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 2.0,
) -> None:
    """Exit 0 when the worker or router on this host answers /healthz (or /readyz) with 200."""
    path = "/readyz" if ready else "/healthz"

    async def probe(url: str) -> str | None:
        """None when healthy, else why not."""
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc or 'no answer'}"
        return None if response.status_code == 200 else f"HTTP {response.status_code}"

    async def main() -> int:
        problems = []
        for candidate in _ports(port, os.environ):
            url = f"http://127.0.0.1:{candidate}{path}"
            problem = await probe(url)
            if problem is None:
                typer.echo(f"healthy: {url}")
                return 0
            problems.append(f"{url} {problem}")
        typer.echo(f"collab health: unhealthy: {'; '.join(problems)}", err=True)
        return 1

    run_command("health", main)


class OwnWorker:
    """The worker in this container, through its own admin API (a ``WorkerRows`` source)."""

    def __init__(self, client: AdminClient) -> None:
        self.client = client

    async def drain(self) -> dict[str, Any]:
        return await self.client.call("POST", "/admin/drain")

    async def worker(self, name: str) -> dict[str, Any]:
        status = await self.client.call("GET", "/admin/status")
        return {"id": status.get("worker", name), "state": status.get("state"), "status": status}


def _admin_token(env: Mapping[str, str]) -> str:
    try:
        tokens = rotating_values(env_secret(env, "ADMIN_TOKEN"))
    except ConfigError as exc:
        raise OpsError(str(exc), exit_code=2) from None
    if not tokens:
        raise OpsError(
            "ADMIN_TOKEN (or ADMIN_TOKEN_FILE) is not set here, so the worker's admin API is "
            "off and it cannot be drained ahead of SIGTERM; set it in the worker's environment "
            "(SIGTERM still drains for DRAIN_TIMEOUT_MS)",
            exit_code=2,
        )
    return tokens[0]


@app.command("self-drain")
def self_drain(
    port: Annotated[
        int | None, typer.Option(help="The worker's port (env PORT, default 8081).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (keep it under the grace).")
    ] = 30.0,
) -> None:
    """Drain the worker in this container and wait until it holds no session (preStop hook).

    Exit 0 when drained (or when no worker listens: nothing to drain), 1 at the timeout.
    """

    async def main() -> int:
        env = os.environ
        target = port or _ports(None, env)[0]  # PORT, else the worker's default (8081)
        url = f"http://127.0.0.1:{target}"
        local = Router(url, _admin_token(env))
        fix = "run this with the worker's own environment (its ADMIN_TOKEN or ADMIN_TOKEN_FILE)"
        async with AdminClient(local, timeout=10.0, peer="worker", token_fix=fix) as c:
            own = OwnWorker(c)
            started = time.monotonic()
            try:
                accepted = await own.drain()
            except Unreachable:
                typer.echo(f"collab self-drain: no worker answers at {url}; nothing to drain")
                return 0
            name = str(accepted.get("worker", "worker"))
            row = await wait_drained(own, name, timeout, started)
        left = sessions_left(row)
        if left:
            typer.echo(
                f"collab self-drain: {name} still holds {len(left)} session(s) after "
                f"{timeout:g} s: {', '.join(left)}; SIGTERM's drain will try again",
                err=True,
            )
            return 1
        typer.echo(f"drained {name} in {time.monotonic() - started:.1f} s")
        return 0

    run_command("self-drain", main)
