"""Waiting for a drained worker to hold no session: `collab drain --wait` and the autoscaler."""

from __future__ import annotations

import time
from typing import Any, Protocol

import anyio

from .display import progress


class WorkerRows(Protocol):
    """Where a worker's row comes from: a router's ``/admin/workers/{id}``, or the worker itself
    (``collab self-drain``). The row has ``state`` and the worker's ``status``."""

    async def worker(self, name: str) -> dict[str, Any]: ...


async def wait_drained(
    client: WorkerRows, worker: str, give_up_after: float, started: float | None = None
) -> dict[str, Any]:
    """Polls until ``worker`` holds no session (or is gone), showing progress; its last row.

    After ``give_up_after`` seconds it returns anyway: the caller reports what is left.
    """
    started = time.monotonic() if started is None else started
    show = progress(f"draining {worker}")
    while True:
        row = await client.worker(worker)
        left = sessions_left(row)
        in_progress = row.get("status", {}).get("drain", {}).get("inProgress", False)
        if row.get("state") == "down" or (not left and not in_progress):
            show("no sessions left", ticking=f"{time.monotonic() - started:.1f} s", done=True)
            return row
        elapsed = time.monotonic() - started
        if elapsed >= give_up_after:
            show(f"{len(left)} session(s) left, giving up after {give_up_after:g} s", done=True)
            return row
        show(f"{len(left)} session(s) left", ticking=f"{elapsed:.1f} s")
        await anyio.sleep(0.25)


def sessions_left(row: dict[str, Any]) -> list[str]:
    status = row.get("status")
    if status is None:
        return []  # down or unreachable: it holds nothing any router can reach
    left: list[str] = status.get("drain", {}).get("sessionsLeft", [])
    return left
