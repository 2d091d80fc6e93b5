"""``python -m router``: RouterSettings.from_env() → run_router until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys

import anyio

from contract.env import ConfigError
from contract.lifeline import die_with_parent
from contract.logs import configure_logging

from .server import run_router
from .settings import RouterSettings


async def _main(settings: RouterSettings) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(run_router, settings)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()


def main() -> None:
    try:
        die_with_parent()  # first: `collab up`'s children must not outlive it
        settings = RouterSettings.from_env()
    except ConfigError as exc:
        print(f"collab router: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_format)
    anyio.run(_main, settings, backend_options={"use_uvloop": True})


if __name__ == "__main__":
    main()
