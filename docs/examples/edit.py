"""Edit one shared file through the router with a standard Yjs client (pycrdt-websocket).

    python docs/examples/edit.py demo/hello.txt "Alice was here. "

It connects to ``ws://127.0.0.1:8080/yjs/demo/hello.txt`` (session ``demo``, file
``hello.txt``), appends its text once the document has synced, prints the file every time
anyone changes it, and after ``--seconds`` prints the final text. Run two at once, in two
terminals: both end with both texts, in the same order. It needs pycrdt-websocket and httpx-ws:
``pip install '.[client]'`` from this repository (``make run`` installs them into ``.venv``).
"""

from __future__ import annotations

import argparse
import sys

import anyio
from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider, Text, TextEvent
from pycrdt.websocket.websocket import HttpxWebsocket


async def edit(router: str, room: str, addition: str, seconds: float) -> str:
    doc = Doc()
    text = doc.get("content", type=Text)

    def show(event: TextEvent) -> None:
        print(f"  now: {str(text)!r}", flush=True)

    async with aconnect_ws(f"{router}/yjs/{room}") as ws, Provider(doc, HttpxWebsocket(ws, room)):
        # The server's first sync reply lands within a few milliseconds; appending before it
        # would still merge correctly, but after it the text goes at the real end.
        await anyio.sleep(0.5)
        text.observe(show)
        text += addition
        await anyio.sleep(seconds)
    return str(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("room", help="SESSION/PATH, e.g. demo/hello.txt")
    parser.add_argument("text", help="what to append")
    parser.add_argument("--router", default="http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    try:
        final = anyio.run(edit, args.router, args.room, args.text, args.seconds)
    except OSError as exc:
        sys.exit(f"edit.py: cannot reach {args.router} ({exc}); is `make run` running?")
    print(f"final: {final!r}")


if __name__ == "__main__":
    main()
