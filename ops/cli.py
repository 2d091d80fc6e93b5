"""The ``collab`` command: one typer app for processes and operator commands."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import anyio
import typer

from contract.env import ConfigError
from contract.ids import validate_session_id
from router.settings import RouterSettings
from worker.settings import Settings
from worker.storage import StorageError

from . import admin_commands, local, transfer
from .display import emit
from .storage import session_store
from .up import Up

app = typer.Typer(
    name="collab",
    no_args_is_help=True,
    add_completion=False,
    help="Real-time collaboration backend: workers, router and operator commands.",
)


app.add_typer(admin_commands.app)
app.add_typer(local.app)


@app.callback()
def _root() -> None:
    """Real-time collaboration backend: workers, router and operator commands."""


def _env(**options: object) -> dict[str, str]:
    """This process's environment with the options that were given on top."""
    env = dict(os.environ)
    env.update({name: str(value) for name, value in options.items() if value is not None})
    return env


def _exec_server(
    module: str, env: dict[str, str], check: Callable[[dict[str, str]], object]
) -> None:
    """Validates the configuration, then becomes ``python -m module``.

    The long-running server replaces this process: it need not carry the CLI's imports (typer,
    click, rich: about 15 MB of a worker's baseline memory).
    """
    try:
        check(env)
    except ConfigError as exc:
        typer.echo(f"collab {module}: {exc}", err=True)
        raise typer.Exit(2) from None
    os.execvpe(sys.executable, [sys.executable, "-m", module], env)


@app.command()
def worker(
    port: Annotated[int | None, typer.Option(help="Listen port (env PORT, default 8081).")] = None,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Name on the ring (env WORKER_ID).")
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "0.0.0.0",
) -> None:
    """Serve one worker: live sessions over the Yjs and JSON protocols."""
    env = _env(PORT=port, WORKER_ID=worker_id, COLLAB_HOST=host)
    _exec_server("worker", env, Settings.from_env)


@app.command()
def router(
    port: Annotated[int | None, typer.Option(help="Listen port (env PORT, default 8080).")] = None,
    workers: Annotated[
        str | None, typer.Option(help="Static workers, host:port,... (env WORKERS).")
    ] = None,
    workers_dns: Annotated[
        str | None,
        typer.Option(help="DNS name listing the workers, re-resolved (env WORKERS_DNS)."),
    ] = None,
    workers_port: Annotated[
        int | None, typer.Option(help="Workers' port for --workers-dns (env WORKERS_PORT).")
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "0.0.0.0",
) -> None:
    """Serve one router: pins each session to one worker and relays its connections."""
    env = _env(
        PORT=port,
        WORKERS=workers,
        WORKERS_DNS=workers_dns,
        WORKERS_PORT=workers_port,
        COLLAB_HOST=host,
    )
    _exec_server("router", env, RouterSettings.from_env)


@app.command()
def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 2,
    port: Annotated[
        int, typer.Option(min=1, max=65000, help="Router port; workers take the next ones.")
    ] = 8080,
    data_dir: Annotated[
        Path, typer.Option(help="Storage, git work trees and logs (unless MINIO_ENDPOINT).")
    ] = Path(".collab"),
    host: Annotated[str, typer.Option(help="The router's listen address.")] = "127.0.0.1",
) -> None:
    """The whole system on this machine: N workers and a router; Ctrl-C drains and stops all."""
    try:
        Settings.from_env({**os.environ, "PORT": str(port + 1)})
    except ConfigError as exc:
        typer.echo(f"collab up: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(Up(workers, port, host, data_dir).run())


@app.command()
def operator(
    namespace: Annotated[
        str | None,
        typer.Option(help="Namespace of the CollabPools (env POD_NAMESPACE; in a Pod: its own)."),
    ] = None,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between reconciliation rounds of a pool.")
    ] = 5.0,
    router: Annotated[
        str | None,
        typer.Option(help="Router URL for pools without spec.routerUrl (env COLLAB_ROUTER)."),
    ] = None,
    liveness: Annotated[
        str | None,
        typer.Option(help="Serve a liveness endpoint here, e.g. http://0.0.0.0:8080/healthz."),
    ] = None,
) -> None:
    """The Kubernetes operator: reconciles the CollabPools of one namespace (worker Pods,
    scaling on live sessions, drained scale-down and rollouts). Needs COLLAB_ADMIN_TOKEN."""
    import kopf  # the CLI's other commands do not pay for kopf's import

    from .client import OpsError, Router
    from .kube_operator import OperatorConfig, run

    try:
        reached = Router.from_options(router)
    except OpsError as exc:
        typer.echo(f"collab operator: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    in_pod = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    namespace = (
        namespace
        or os.environ.get("POD_NAMESPACE")
        or (in_pod.read_text().strip() if in_pod.exists() else "default")
    )
    json_logs = os.environ.get("LOG_FORMAT", "text") == "json"
    kopf.configure(log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    given = router or os.environ.get("COLLAB_ROUTER")
    config = OperatorConfig(
        namespace, interval, reached.token, reached.url if given else None, liveness
    )
    anyio.run(run, config)


@app.command("import")
def import_(
    session: Annotated[str, typer.Argument(help="New session id.")],
    directory: Annotated[Path, typer.Argument(help="Directory to import (its .git too).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """A directory into storage as a session: text files, binary files, and its git history."""
    raise typer.Exit(anyio.run(_transfer, "import", session, directory, as_json))


@app.command("export")
def export(
    session: Annotated[str, typer.Argument(help="Session id.")],
    directory: Annotated[Path, typer.Argument(help="New or empty directory to write.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """A session out of storage as a working tree with its full git history."""
    raise typer.Exit(anyio.run(_transfer, "export", session, directory, as_json))


async def _transfer(verb: str, session: str, directory: Path, as_json: bool) -> int:
    def progress(phase: str, done: int, total: int) -> None:
        typer.echo(f"\r{verb}: {phase} {done}/{total}", err=True, nl=done == total)

    try:
        validate_session_id(session)
        async with session_store() as store:
            run = transfer.import_dir if verb == "import" else transfer.export_dir
            result = await run(store, session, directory, progress)
    except (ValueError, ConfigError) as exc:
        typer.echo(f"collab {verb}: {exc}", err=True)
        return 2
    except (transfer.TransferError, StorageError) as exc:
        typer.echo(f"collab {verb}: {exc}", err=True)
        return 1
    row = {
        "sessionId": session,
        "directory": str(directory),
        "textFiles": result.texts,
        "binaryFiles": result.binaries,
        "bytes": result.bytes,
        "gitHead": result.head,
    }
    emit(
        [row],
        [(k, k) for k in ("sessionId", "textFiles", "binaryFiles", "bytes", "gitHead")],
        as_json=as_json,
    )
    return 0


LOG_COLUMNS = (
    ("ts", "TIME"),
    ("userId", "USER"),
    ("worker", "WORKER"),
    ("op", "OP"),
    ("path", "PATH"),
    ("bytes", "BYTES"),
)


@app.command()
def log(
    session: Annotated[str, typer.Argument(help="Session id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    interval: Annotated[float, typer.Option(help="--follow: seconds between polls.")] = 1.0,
) -> None:
    """The session's operations log, in order, across all workers (reads storage directly)."""
    raise typer.Exit(anyio.run(_log, session, follow, as_json, interval))


async def _log(session: str, follow: bool, as_json: bool, interval: float) -> int:
    try:
        validate_session_id(session)
        async with session_store() as store:
            if not await store.session_exists(session):
                typer.echo(f"collab log: no session {session!r} in storage", err=True)
                return 1
            seen: set[str] = set()
            first = True
            while True:
                entries, keys = await store.read_log_since(session, seen)
                seen.update(keys)
                emit(entries, LOG_COLUMNS, as_json=as_json, header=first)
                first = first and not entries
                if not follow:
                    return 0
                await anyio.sleep(interval)
    except (ValueError, ConfigError) as exc:
        typer.echo(f"collab log: {exc}", err=True)
        return 2
    except StorageError as exc:
        typer.echo(f"collab log: {exc}", err=True)
        return 1


if __name__ == "__main__":
    app()
