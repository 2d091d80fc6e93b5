"""The `collab` command as a real subprocess (the installed entry point), for CLI tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

COLLAB = Path(sys.executable).parent / "collab"


def collab_sync(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Done:
    # COLLAB_*/ADMIN_TOKEN of the shell running the tests must not leak into a test's command.
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    return subprocess.run(
        [str(COLLAB), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def collab(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Done:
    """Runs `collab ARGS` with the test's environment plus ``env``; its exit code and output."""
    return await asyncio.to_thread(collab_sync, *args, env=env, timeout=timeout)


Done = subprocess.CompletedProcess[str]
