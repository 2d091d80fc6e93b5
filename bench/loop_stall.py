"""How long compaction's CPU work holds the event loop: a ticker on the loop while a snapshot is
built in a thread (pycrdt holds the GIL for each whole call, so a thread alone does not keep the
loop running; docs/storage.md, Compaction).

``python -m bench.loop_stall [--keystrokes N ...] [--segments K]``

Generates a typing history (``bench.history.generate``), groups it into K segments as a live
worker's flushes would, and builds the snapshot a compaction or a cold load builds from them;
prints the time it took and the longest the loop waited for a tick of 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import anyio.to_thread

from bench.history import generate
from worker.storage.session_store import _snapshot_doc, merge_many


async def stall(keystrokes: int, segments: int) -> dict[str, float]:
    updates, _ = generate(keystrokes, seed=1)
    per = len(updates) // segments + 1
    items = [(f"{i:04d}", merge_many(updates[i * per : (i + 1) * per])) for i in range(segments)]
    items = [item for item in items if item[1]]
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last - 0.01)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    snapshot = await anyio.to_thread.run_sync(_snapshot_doc, "content", items)
    took = time.monotonic() - started
    done.set()
    await ticker
    return {"seconds": took, "max_stall_ms": max(gaps) * 1000, "snapshot_bytes": len(snapshot)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keystrokes", type=int, nargs="+", default=[200_000, 600_000])
    parser.add_argument("--segments", type=int, default=34)
    args = parser.parse_args()
    print(f"{'keystrokes':>10} {'segments':>8} {'snapshot':>10} {'build':>8} {'loop held':>10}")
    for n in args.keystrokes:
        r = asyncio.run(stall(n, args.segments))
        print(
            f"{n:>10,} {args.segments:>8} {r['snapshot_bytes'] / 1e6:>8.2f}MB "
            f"{r['seconds']:>7.2f}s {r['max_stall_ms']:>8.0f}ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
