"""The ``collab`` command: one typer app for processes and operator commands."""

from __future__ import annotations

import os
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
    from worker.__main__ import run

    env = dict(os.environ)
    if worker_id is not None:
        env["WORKER_ID"] = worker_id
    try:
        settings = Settings.from_env(env, port=port, host=host)
    except ConfigError as exc:
        typer.echo(f"collab worker: {exc}", err=True)
        raise typer.Exit(2) from None
    run(settings)


if __name__ == "__main__":
    app()
