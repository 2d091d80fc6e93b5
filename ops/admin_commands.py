"""Operator commands against a running router: workers, sessions, locate, drain, undrain,
commit, status, autoscale.

They reach the router named by ``--router`` / ``COLLAB_ROUTER`` with ``COLLAB_ADMIN_TOKEN``
(``ops.client``), print a table by default and JSON with ``--json`` (``ops.display``), and exit
0 when done, 1 when the operation failed, 2 when the command was used wrongly.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from contract.ids import validate_session_id

from . import swarm_autoscaler
from .client import AdminClient, Router
from .display import emit, run_command
from .draining import sessions_left, wait_drained
from .scaling_policy import NO_BUFFER, Buffer
from .status import render_status

app = typer.Typer()

RouterOption = Annotated[
    str | None,
    typer.Option(
        "--router",
        help="Router base URL (env COLLAB_ROUTER, default http://127.0.0.1:8080).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts.")]

Command = Callable[[AdminClient], Awaitable[int]]


def _run(name: str, router_url: str | None, command: Command) -> None:
    """Runs one command against the router; an OpsError is one line on stderr + its exit code."""

    async def main() -> int:
        async with AdminClient(Router.from_options(router_url)) as client:
            return await command(client)

    run_command(name, main)


WORKER_COLUMNS = (
    ("id", "WORKER"),
    ("address", "ADDRESS"),
    ("state", "STATE"),
    ("sessions", "SESSIONS"),
    ("connections", "CONNECTIONS"),
    ("storage", "STORAGE"),
    ("unflushedBytes", "UNFLUSHED"),
    ("error", "ERROR"),
)


@app.command()
def workers(router: RouterOption = None, as_json: JsonOption = False) -> None:
    """Every worker the router knows: state (active/draining/starting/down), sessions, clients."""

    async def command(client: AdminClient) -> int:
        emit(await client.workers(), WORKER_COLUMNS, as_json=as_json)
        return 0

    _run("workers", router, command)


SESSION_COLUMNS = (
    ("sessionId", "SESSION"),
    ("worker", "WORKER"),
    ("clients", "CLIENTS"),
    ("docs", "DOCS"),
    ("lastActivityAgo", "LAST ACTIVITY"),
    ("users", "USERS"),
    ("epoch", "EPOCH"),
    ("ownedSince", "OWNED SINCE"),
)


@app.command()
def sessions(
    worker: Annotated[
        str | None, typer.Option("--worker", help="Only this worker's sessions.")
    ] = None,
    router: RouterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Live sessions across the pool: worker, clients, documents, last activity."""

    async def command(client: AdminClient) -> int:
        body = await client.sessions(worker)
        rows = body.get("sessions", [])
        now = time.time()
        for row in rows:
            last = row.get("lastActivity")
            row["lastActivityAgo"] = _ago(now - last) if isinstance(last, int | float) else None
        emit(rows, SESSION_COLUMNS, as_json=as_json)
        if not rows and not as_json:
            typer.echo("no live sessions" + (f" on {worker}" if worker else ""), err=True)
        errors: dict[str, str] = body.get("errors", {})
        for name, error in sorted(errors.items()):
            typer.echo(f"collab sessions: worker {name} did not answer: {error}", err=True)
        return 1 if errors else 0  # an incomplete list must not look complete to a script

    _run("sessions", router, command)


@app.command()
def locate(
    session: Annotated[str, typer.Argument(help="Session id.")],
    router: RouterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a session lives: the ring's owner, the ownership record in storage (holder,
    epoch, since; it decides when they differ) and the workers it is live on now."""

    _valid_session("locate", session)

    async def command(client: AdminClient) -> int:
        row = await client.locate(session)
        columns = [("sessionId", "SESSION"), ("owner", "OWNER"), ("address", "ADDRESS")]
        columns += [("holder", "HOLDER"), ("epoch", "EPOCH"), ("ownedSince", "OWNED SINCE")]
        columns += [("live", "LIVE"), ("liveOn", "LIVE ON")]
        emit([row], columns, as_json=as_json)
        return 0

    _run("locate", router, command)


DRAIN_COLUMNS = (
    ("worker", "WORKER"),
    ("state", "STATE"),
    ("sessions", "SESSIONS"),
    ("seconds", "SECONDS"),
    ("notDurable", "NOT DURABLE"),
)


@app.command()
def drain(
    worker: Annotated[str, typer.Argument(help="Worker id (WORKER_ID) or host:port.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Return once the worker holds no session.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="--wait: give up after this many seconds.")
    ] = 120.0,
    router: RouterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a worker out of the pool: no new sessions; live ones flush and move, nothing lost."""

    async def command(client: AdminClient) -> int:
        started = time.monotonic()
        await client.drain(worker)
        if not wait:
            row = await client.worker(worker)
            emit([_drain_row(row, started)], DRAIN_COLUMNS, as_json=as_json)
            return 0
        row = await wait_drained(client, worker, timeout, started)
        result = _drain_row(row, started)
        emit([result], DRAIN_COLUMNS, as_json=as_json)
        left = sessions_left(row)
        if left:
            typer.echo(
                f"collab drain: {worker} still holds {len(left)} session(s) after "
                f"{timeout:g} s: {', '.join(left)}; see its log, storage may be down",
                err=True,
            )
            return 1
        return 0

    _run("drain", router, command)


def _drain_row(row: dict[str, Any], started: float) -> dict[str, Any]:
    last = row.get("status", {}).get("drain", {}).get("last") or {}
    return {
        "worker": row.get("id"),
        "state": row.get("state"),
        "sessions": len(sessions_left(row)),
        "sessionsLeft": sessions_left(row),
        "seconds": round(time.monotonic() - started, 2),
        "notDurable": last.get("notDurable", []),
    }


@app.command()
def undrain(
    worker: Annotated[str, typer.Argument(help="Worker id (WORKER_ID) or host:port.")],
    router: RouterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Return a drained worker to the pool: it takes sessions again."""

    async def command(client: AdminClient) -> int:
        await client.undrain(worker)
        row = await client.worker(worker)
        emit([row], WORKER_COLUMNS[:5], as_json=as_json)
        return 0

    _run("undrain", router, command)


@app.command()
def commit(
    session: Annotated[str, typer.Argument(help="Session id.")],
    router: RouterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Auto-commit a git session now, on the worker that holds it (or its owner)."""

    _valid_session("commit", session)

    async def command(client: AdminClient) -> int:
        row = await client.commit(session)
        columns = [("sessionId", "SESSION"), ("worker", "WORKER"), ("result", "RESULT")]
        columns += [("commit", "COMMIT"), ("changed", "CHANGED")]
        emit([row], columns, as_json=as_json)
        return 0

    _run("commit", router, command)


@app.command()
def status(router: RouterOption = None, as_json: JsonOption = False) -> None:
    """One screen: router, workers, sessions, connections, storage, flush lag, last commits."""

    async def command(client: AdminClient) -> int:
        body = await client.status()
        if as_json:
            sys.stdout.write(json.dumps(body) + "\n")
        else:
            sys.stdout.write(render_status(body, client.router.url) + "\n")
        healthy = body["router"]["ready"] and not body["totals"]["storageUnavailable"]
        return 0 if healthy else 1

    _run("status", router, command)


@app.command()
def autoscale(
    target_sessions_per_worker: Annotated[
        int, typer.Option("--target-sessions-per-worker", min=1, help="Sessions one worker holds.")
    ],
    minimum: Annotated[int, typer.Option("--min", min=1, help="Fewest workers.")] = 1,
    maximum: Annotated[int, typer.Option("--max", min=1, help="Most workers.")] = 10,
    swarm_service: Annotated[
        str | None,
        typer.Option(help="Apply with `docker service scale` to this Swarm service."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and print only.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between decisions.")] = 15.0,
    scale_down_delay: Annotated[
        float,
        typer.Option(min=0, help="Cool-off: scale down only to the highest need seen this long."),
    ] = 300.0,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for each removed worker to drain.")
    ] = 120.0,
    settle_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for Swarm to remove the tasks.")
    ] = 120.0,
    rounds: Annotated[int, typer.Option(min=0, help="Stop after N decisions (0: never).")] = 0,
    buffer_sessions: Annotated[
        str | None,
        typer.Option(help="Spare capacity: N sessions, or N% of the live sessions."),
    ] = None,
    buffer_workers: Annotated[
        str | None,
        typer.Option(help="Spare capacity: N workers, or N% of the workers needed."),
    ] = None,
    router: RouterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide the worker count from live sessions; with --swarm-service, apply it on Swarm."""
    if minimum > maximum:
        typer.echo(f"collab autoscale: --min {minimum} is above --max {maximum}", err=True)
        raise typer.Exit(2)
    if buffer_sessions is not None and buffer_workers is not None:
        typer.echo("collab autoscale: --buffer-sessions or --buffer-workers, not both", err=True)
        raise typer.Exit(2)
    try:
        buffer = (
            Buffer.parse(buffer_sessions, "sessions")
            if buffer_sessions is not None
            else Buffer.parse(buffer_workers, "workers")
            if buffer_workers is not None
            else NO_BUFFER
        )
    except ValueError as exc:
        typer.echo(f"collab autoscale: {exc}", err=True)
        raise typer.Exit(2) from None
    policy = swarm_autoscaler.Policy(
        target_sessions_per_worker, minimum, maximum, scale_down_delay, buffer
    )

    async def command(client: AdminClient) -> int:
        swarm = None
        if swarm_service is not None:
            swarm = swarm_autoscaler.Swarm(swarm_service, client, drain_timeout, settle_timeout)
        loop = swarm_autoscaler.Loop(policy, client, swarm, dry_run=dry_run)
        return await loop.run(interval, rounds, as_json=as_json)

    _run("autoscale", router, command)


def _valid_session(name: str, session: str) -> None:
    try:
        validate_session_id(session)
    except ValueError as exc:
        typer.echo(f"collab {name}: {exc}", err=True)
        raise typer.Exit(2) from None


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"
