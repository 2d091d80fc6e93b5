"""Real Node Yjs clients for tests: an unmodified y-websocket `WebsocketProvider` in a subprocess.

`tests/js/client.mjs` is the client; this module installs its packages once (`npm ci`, skipped
while `node_modules` matches `package-lock.json`) and runs it, one-shot or as a long-lived driver
that survives a server restart and reports y-websocket's own reconnects.

    result = await run_js_client(url, "S/a.py", insert="hi", expect_contains=["hi"])
    closed = await run_js_client(url, "S/a.py", token=jwt, expect_close=True)  # {"closeCode", ..}
    async with js_client(url, "S/a.py", token=jwt, token_carrier="protocol") as client:
        await client.insert("x")
        state = await client.wait(expect_contains=["x"], timeout_ms=5000)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

JS_DIR = Path(__file__).parent / "js"
CLIENT = JS_DIR / "client.mjs"
_STAMP = JS_DIR / "node_modules" / ".package-lock.sha256"
_MAX_LINE = 16 * 1024 * 1024

requires_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="needs Node.js and npm on PATH",
)
"""Apply together with `pytest.mark.node` to tests that run the JS clients."""


class JSClientError(AssertionError):
    """The JS client failed: exit status or error reply, with its stderr or message."""


def _install_sync() -> None:
    # A file lock, not an anyio.Lock: pytest-xdist workers are separate processes.
    digest = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()
    with open(JS_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _STAMP.exists() and _STAMP.read_text() == digest:
            return
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=300,
        )
        _STAMP.write_text(digest)


async def ensure_node_modules() -> None:
    """`npm ci` in tests/js unless node_modules already matches package-lock.json."""
    await anyio.to_thread.run_sync(_install_sync)


def _args(url: str, room: str, **flags: Any) -> list[str]:
    # `--name=value`, so that a value starting with "-" is not taken for an option
    args = ["node", str(CLIENT), f"--url={url}", f"--room={room}"]
    for name, value in flags.items():
        if value is None or value is False:
            continue
        option = "--" + name.replace("_", "-")
        if value is True:
            args.append(option)
        else:
            text = ",".join(value) if isinstance(value, list | tuple) else str(value)
            args.append(f"{option}={text}")
    return args


async def run_js_client(
    url: str,
    room: str,
    *,
    insert: str | None = None,
    insert_at: int | None = None,
    expect: str | None = None,
    expect_contains: Sequence[str] | None = None,
    index: bool = False,
    timeout_ms: int = 10_000,
    hold_ms: int = 0,
    token: str | None = None,
    token_carrier: str | None = None,
    expect_close: bool = False,
) -> dict[str, Any]:
    """Connect, sync, optionally insert, wait for the expected text, and return the final state.

    Returns `{"text", "synced", "reconnects"}` (index mode: `{"keys", "files", ...}`; there
    `expect_contains` names keys); raises JSClientError with the client's stderr when it times
    out or fails. `expect_contains` items travel comma-joined, so they cannot contain commas.
    `token` is sent as the `token` URL parameter, or with `token_carrier="protocol"` as the
    offered subprotocol. `expect_close` waits for the server's first close instead and returns
    `{"closeCode", "closeReason", "synced"}`.
    """
    await ensure_node_modules()
    args = _args(
        url,
        room,
        insert=insert,
        insert_at=insert_at,
        expect=expect,
        expect_contains=list(expect_contains) if expect_contains else None,
        index=index,
        timeout_ms=timeout_ms,
        hold_ms=hold_ms,
        token=token,
        token_carrier=token_carrier,
        expect_close=expect_close,
    )
    with anyio.fail_after((timeout_ms * 2 + hold_ms) / 1000 + 10):
        done = await anyio.run_process(args, cwd=JS_DIR, check=False)
    if done.returncode != 0:
        raise JSClientError(f"{room}: exit {done.returncode}: {done.stderr.decode().strip()}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


class JSClient:
    """A live y-websocket client in a Node process: one command at a time, one reply each."""

    def __init__(self, process: Process, room: str) -> None:
        assert process.stdout is not None
        self._process = process
        self._lines = BufferedByteReceiveStream(process.stdout)
        self.room = room
        self.events: list[dict[str, Any]] = []
        """Unsolicited lines seen so far: `ready`, and `status` (connected/disconnected)."""

    async def _read(self) -> dict[str, Any]:
        try:
            line = await self._lines.receive_until(b"\n", _MAX_LINE)
        except (anyio.IncompleteRead, anyio.EndOfStream):
            code = await self._process.wait()
            raise JSClientError(f"{self.room}: client exited ({code}); see its stderr") from None
        message: dict[str, Any] = json.loads(line)
        return message

    async def _ready(self, timeout_ms: int) -> dict[str, Any]:
        with anyio.fail_after(timeout_ms / 1000 + 10):
            while True:
                message = await self._read()
                self.events.append(message)
                if message.get("event") == "ready":
                    return message

    async def command(self, op: str, timeout_s: float = 30, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply, collecting status events on the way."""
        assert self._process.stdin is not None
        await self._process.stdin.send((json.dumps({"op": op, **fields}) + "\n").encode())
        with anyio.fail_after(timeout_s):
            while True:
                message = await self._read()
                if "event" in message:
                    self.events.append(message)
                    continue
                if "error" in message:
                    raise JSClientError(f"{self.room}: {op}: {message['error']}")
                return message

    async def insert(self, text: str, at: int | None = None) -> dict[str, Any]:
        return await self.command("insert", text=text, at=at)

    async def dump(self) -> dict[str, Any]:
        """The current state: `{"text", "synced", "reconnects"}`."""
        return await self.command("dump")

    async def wait(
        self,
        *,
        expect: str | None = None,
        expect_contains: Sequence[str] = (),
        timeout_ms: int = 10_000,
    ) -> dict[str, Any]:
        """Wait until synced (again, after a reconnect) and the text matches."""
        return await self.command(
            "wait",
            timeout_s=timeout_ms / 1000 + 10,
            expect=expect,
            expect_contains=list(expect_contains),
            timeout_ms=timeout_ms,
        )

    @property
    def reconnects(self) -> int:
        """Reconnects y-websocket reported so far (as of the last line read)."""
        counts = [e["reconnects"] for e in self.events if "reconnects" in e]
        return max(counts, default=0)


@asynccontextmanager
async def js_client(
    url: str,
    room: str,
    *,
    index: bool = False,
    timeout_ms: int = 10_000,
    token: str | None = None,
    token_carrier: str | None = None,
) -> AsyncIterator[JSClient]:
    """A long-lived JS client, yielded once it has synced; quit (or killed) on exit."""
    await ensure_node_modules()
    args = _args(
        url,
        room,
        index=index,
        timeout_ms=timeout_ms,
        interactive=True,
        token=token,
        token_carrier=token_carrier,
    )
    async with await anyio.open_process(args, cwd=JS_DIR, stderr=None) as process:
        client = JSClient(process, room)
        try:
            await client._ready(timeout_ms)
            yield client
            with anyio.move_on_after(5, shield=True):
                await client.command("quit")
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.move_on_after(5, shield=True):
                    await process.wait()
