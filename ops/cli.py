"""The ``collab`` command: one typer app for processes and operator commands."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from worker.settings import ConfigError, Settings

app = typer.Typer(
    name="collab",
    no_args_is_help=True,
    add_completion=False,
    help="Real-time collaboration backend: workers, router and operator commands.",
)


@app.callback()
def _root() -> None:
    """Real-time collaboration backend: workers, router and operator commands."""


@app.command()
def worker(
    port: Annotated[int | None, typer.Option(help="Listen port (env PORT, default 8081).")] = None,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Name on the ring (env WORKER_ID).")
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "0.0.0.0",
) -> None:
    """Serve one worker: live sessions over the Yjs and JSON protocols."""
    env = dict(os.environ)
    if worker_id is not None:
        env["WORKER_ID"] = worker_id
    if port is not None:
        env["PORT"] = str(port)
    env["COLLAB_HOST"] = host
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        typer.echo(f"collab worker: {exc}", err=True)
        raise typer.Exit(2) from None
    # The long-running server replaces this process: it need not carry the CLI's imports
    # (typer, click, rich: about 15 MB of a worker's baseline memory).
    os.execvpe(sys.executable, [sys.executable, "-m", "worker"], env)


if __name__ == "__main__":
    app()
