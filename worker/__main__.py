"""``python -m worker``: Settings.from_env() → create_app(settings) → WorkerServer."""

from __future__ import annotations

import gc
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

# The cyclic collector's thresholds while serving (CPython's: 700, 10, 10). A join allocates
# long-lived objects (connection, session, documents) that every young collection scans again,
# and a join storm set off full collections of 50-90 ms each, over the whole heap, while the
# worker's objects hold almost no cycles (0 collected in a storm of 2,000 joins).
GC_THRESHOLDS = (7000, 10, 10)


def tune_gc() -> None:
    """What start-up allocated (modules, settings, the app) lives as long as the process: it
    is frozen out of every collection, and collections run a tenth as often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(settings: Settings) -> None:
    configure_logging(settings.log_format)
    app = create_app(settings)
    server = WorkerServer(app, settings)
    tune_gc()

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
