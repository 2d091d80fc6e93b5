"""One client of the join race (tests/worker/test_join_race.py), in a process of its own.

    python -m tests.race_client WS_URL ROOM TEXT GO_AT EXPECTED SECONDS

A fresh pycrdt ``Doc`` with the client ID pycrdt itself picks (the point of the race: every
process seeds its own generator), pycrdt's own provider, the text appended at wall-clock time
``GO_AT``; once its text holds ``EXPECTED`` sentences (each ends with "> "), or ``SECONDS`` after
``GO_AT``, it prints one JSON line: its client ID, its final text, how long it took to hold
them all, and the close code the server sent, if any.
"""

from __future__ import annotations

import json
import sys
import time

import anyio
from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket


async def race(
    url: str, room: str, text: str, go_at: float, expected: int, seconds: float
) -> dict[str, object]:
    doc = Doc()
    content = doc.get("content", type=Text)
    closed: int | None = None
    took: float | None = None
    try:
        async with aconnect_ws(f"{url}/yjs/{room}") as ws, Provider(doc, HttpxWebsocket(ws, room)):
            await anyio.sleep(max(0.0, go_at - time.time()))
            content += text
            while time.time() < go_at + seconds:
                if str(content).count("> ") >= expected:
                    took = time.time() - go_at
                    break
                await anyio.sleep(0.02)
            await anyio.sleep(0.3)  # anything later (a duplicate) would show too
    except* Exception as group:  # the server closed us (a conflict): say how
        closed = getattr(group.exceptions[0], "code", -1)
    return {"client_id": doc.client_id, "text": str(content), "took": took, "closed": closed}


def main() -> None:
    url, room, text, go_at, expected, seconds = sys.argv[1:7]
    result = anyio.run(race, url, room, text, float(go_at), int(expected), float(seconds))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
