"""A process that writes and compacts one session until it is killed (SIGKILL tests).

``python -m tests.storage.compactor_child CONFIG``: CONFIG is JSON with ``store`` (keyword
arguments of ``open_store``), ``session``, ``worker`` and ``first`` (the first token). Two
tasks share one SessionStore: one appends a token update to doc ``tokens`` and prints
``acked N`` once it is stored; the other compacts the session over and over. Nothing is
printed for a compaction: the parent kills us at a random moment, and whatever we were doing
then (listing, reading, putting the snapshot, deleting) must lose nothing acknowledged.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from pycrdt import Doc, Map

from worker.storage import SessionStore, open_store


def token_update(index: int) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("tokens", type=Map)[f"t{index}"] = index
    return doc.get_update()


async def main(config: dict[str, Any]) -> None:
    store = open_store(**config["store"])
    sessions = SessionStore(store, config["worker"])
    session = config["session"]

    async def write() -> None:
        index = int(config["first"])
        while True:
            await sessions.append_updates(session, [("tokens", token_update(index))])
            print(f"acked {index}", flush=True)
            index += 1

    async def compact() -> None:
        while True:
            await sessions.compact(session)

    print("ready", flush=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        tg.start_soon(compact)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
