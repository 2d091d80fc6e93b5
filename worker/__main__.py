"""``python -m worker``: Settings.from_env() → create_app(settings) → WorkerServer."""

from __future__ import annotations

import sys

import anyio
import structlog

from contract.env import ConfigError
from contract.lifeline import die_with_parent
from contract.logs import configure_logging
from contract.server import serve

from .app import create_app
from .server import WorkerServer
from .settings import Settings


def run(settings: Settings) -> None:
    configure_logging(settings.log_format)
    app = create_app(settings)
    server = WorkerServer(app, settings)

    async def drain() -> None:
        state = getattr(app.state, "worker", None)
        if state is not None:
            structlog.get_logger("worker").info("signal_received", action="drain")
            await state.manager.handoff.drain(settings.drain_timeout_ms / 1000)

    anyio.run(serve, server, drain, backend_options={"use_uvloop": True})
    proof = getattr(app.state, "conditional_writes", None)
    if proof is not None and proof.refused is not None:
        raise SystemExit(3)  # logged as storage_refused: the store ignores conditional writes


def main() -> None:
    try:
        die_with_parent()  # first: `collab up`'s children must not outlive it
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"collab worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    run(settings)


if __name__ == "__main__":
    main()
