"""Replays an editing trace through the router beside ``@y/websocket-server``; long histories.

    python -m bench.trace --trace FILE [--times N] [--s3] [--json]

FILE is a sequential trace in the josephg/editing-traces format (gzipped or plain JSON; see
docs/benchmarks.md, "Long histories", for where the real ones come from, and
``python -m bench.trace_gen`` for a generated one). For each server, an unmodified y-websocket
provider types every transaction into ``SESSION/file1.txt`` (``--times N``: the same trace again
into file2.txt .. fileN.txt of the same session, one after another) as fast as the server keeps
up, while a second provider watches (``bench/trace_typist.mjs``). Then:

- replay time (first keystroke until the watcher's text equals endContent) and whether the
  final text is exact for the typist and the watcher;
- the server's RSS at the start, its peak while typing and at the end of the typing;
- the encoded document (``Y.encodeStateAsUpdate`` of the watcher's final docs);
- for the worker, what is stored by kind, a few seconds after the last keystroke, and again
  once the session has been unloaded (last client gone, ``SESSION_IDLE_MS``, compaction);
- a fresh client's sync time while the session is live; for the worker also after a SIGKILL
  and a restart (the fresh client's connect through the router makes the cold load), and the
  worker's RSS after that load.

Exit status 1 when any text was not exact or a phase failed (the report says which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench import procstat
from bench.target import ROOT
from bench.trace_format import TraceError, load, replay
from bench.trace_report import render
from bench.trace_stack import (
    NODE_MODULES,
    REFERENCE_SERVER,
    CollabStack,
    collab_stack,
    node_argv,
    reference_server,
)

T = TypeVar("T")
TYPIST = ROOT / "bench" / "trace_typist.mjs"
SETTLE_S = 3.0  # after the last keystroke: more than FLUSH_INTERVAL_MS and a group commit
SESSION_IDLE_MS = (
    3000  # the worker unloads (and compacts) a session this long after its last client
)
RSS_EVERY_S = 0.2


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PhaseError(RuntimeError):
    """A phase did not finish: a timeout, a client that failed, a process that died."""


class RssSampler:
    """The server's RSS every RSS_EVERY_S: the peak since the last ``reset``."""

    def __init__(self, pid: Callable[[], int]) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        return procstat.sample(self.pid()).rss

    def reset(self) -> None:
        self.peak = self.now()

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(RSS_EVERY_S)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RssSampler]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _line(process: asyncio.subprocess.Process, limit_s: float, what: str) -> dict[str, Any]:
    assert process.stdout is not None
    try:
        async with asyncio.timeout(limit_s):
            line = await process.stdout.readline()
    except TimeoutError:
        raise PhaseError(f"typist: nothing within {limit_s:g} s while waiting for {what}") from None
    if not line:
        code = await process.wait()
        raise PhaseError(f"typist exited ({code}) while waiting for {what}")
    message: dict[str, Any] = json.loads(line)
    if message.get("event") == "failed":
        raise PhaseError(f"typist: {message.get('error')}")
    return message


def _typist_args(
    mode: str, url: str, session: str, trace: Path, times: int, wait_s: float
) -> list[str]:
    return node_argv(
        str(TYPIST), mode, f"--url={url}", f"--session={session}", f"--trace={trace}",
        f"--times={times}", f"--timeout-ms={int(wait_s * 1000)}",
    )  # fmt: skip


async def fresh_client(
    url: str, session: str, trace: Path, times: int, wait_s: float
) -> dict[str, Any]:
    """A new y-websocket client opening every file: connect until synced with the exact text."""
    process = await asyncio.create_subprocess_exec(
        *_typist_args("fetch", url, session, trace, times, wait_s),
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(wait_s + 30):
            out, _ = await process.communicate()
    except TimeoutError:
        raise PhaseError(f"fresh client: no answer within {wait_s + 30:g} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = out.decode().strip().splitlines()
    if not lines:
        raise PhaseError(f"fresh client exited ({process.returncode}) without a result")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@asynccontextmanager
async def typing(
    url: str,
    session: str,
    trace: Path,
    times: int,
    wait_s: float,
    rss: RssSampler,
    row: dict[str, Any],
    cpu: dict[str, int],
) -> AsyncIterator[None]:
    """The typist and its watcher type the whole trace (figures into ``row``), then stay
    connected for the block: the session is live."""
    process = await asyncio.create_subprocess_exec(
        *_typist_args("type", url, session, trace, times, wait_s),
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        await _line(process, wait_s + 30, "every provider to sync")
        row["rss_start"] = rss.now()
        await _line(process, 30, "the first keystroke")
        rss.reset()
        watched = {**cpu, "clients": process.pid}
        cpu0 = {k: procstat.sample(pid).cpu for k, pid in watched.items()}
        busy0 = procstat.system_busy_seconds()
        started = time.monotonic()
        while True:
            message = await _line(process, wait_s + 30, "the end of the typing")
            if message.get("event") == "progress":
                rate = message["typed"] / max(time.monotonic() - started, 1e-3)
                say(
                    f"    file {message['file']}/{message['files']}:"
                    f" {message['typed']:,}/{message['of']:,} keystrokes"
                    + ("" if message["file"] > 1 else f" ({rate:,.0f}/s)")
                )
            elif message.get("event") == "typed":
                break
        row["rss_peak"], row["rss_end"] = max(rss.peak, rss.now()), rss.now()
        row["cpu_s"] = {k: procstat.sample(pid).cpu - cpu0[k] for k, pid in watched.items()}
        # The VM may be shared: what the rest of the machine took meanwhile (100 = one core).
        other = procstat.system_busy_seconds() - busy0 - sum(row["cpu_s"].values())
        row["other_cpu_pct"] = 100 * max(0.0, other) / max(time.monotonic() - started, 1e-3)
        for key in ("replay_ms", "per_file_ms", "keystrokes", "exact_typist", "exact_watcher",
                    "encoded_bytes", "text_chars"):  # fmt: skip
            row[key] = message[key]
        say(
            f"    typed {message['keystrokes']:,} keystrokes"
            f" in {message['replay_ms'] / 1000:.1f} s;"
            f" exact: typist {message['exact_typist']}, watcher {message['exact_watcher']}"
        )
        yield
        assert process.stdin is not None
        process.stdin.write(b"quit\n")
        await process.stdin.drain()
        async with asyncio.timeout(15):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def measure_collab(
    stack: CollabStack, session: str, trace: Path, times: int, wait_s: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": "collab"}
    rss = RssSampler(lambda: stack.worker.pid)
    try:
        async with rss.running():
            say("  typing through the router")
            cpu = {"server": stack.worker.pid, "router": stack.router.pid}
            async with typing(stack.url, session, trace, times, wait_s, rss, row, cpu):
                await asyncio.sleep(SETTLE_S)
                row["stored_live"] = (await stack.stored(session)).to_json()
                say("  a fresh client while the session is live")
                row["fresh_live"] = await fresh_client(stack.url, session, trace, times, wait_s)
            say("  SIGKILL of the worker, restart, a fresh client (cold load)")
            await stack.worker.stop(signal.SIGKILL)
            await stack.start_worker()
            await stack.router_sees_worker()
            row["rss_restarted"] = rss.now()
            row["fresh_cold"] = await fresh_client(stack.url, session, trace, times, wait_s)
            row["rss_after_load"] = rss.now()
        say(f"  waiting for the session to unload (SESSION_IDLE_MS={SESSION_IDLE_MS})")
        await _unloaded(stack, wait_s)
        row["stored_unloaded"] = (await stack.stored(session)).to_json()
    except (PhaseError, TimeoutError) as exc:
        row["error"] = str(exc) or type(exc).__name__
        say(f"  FAILED: {row['error']}")
    row["worker_log"] = stack.log_events()
    # Whether it left by the idle unload (flush, compact, meta) or otherwise (a lease lapse
    # drops a session without compacting it); the listing after it says what is stored then.
    row["idle_unload"] = row["worker_log"].get("session_unloaded", 0) > 0
    return row


async def _unloaded(stack: CollabStack, wait_s: float) -> None:
    try:
        async with asyncio.timeout(SESSION_IDLE_MS / 1000 + wait_s):
            while True:
                if await stack.sessions_active() == 0:
                    break
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise PhaseError("the session was not unloaded in time") from None
    await asyncio.sleep(0.5)  # the unload's last deletes


async def measure_reference(
    url: str, pid: int, session: str, trace: Path, times: int, wait_s: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"server": "reference"}
    rss = RssSampler(lambda: pid)
    try:
        async with rss.running():
            say("  typing into @y/websocket-server")
            async with typing(url, session, trace, times, wait_s, rss, row, {"server": pid}):
                say("  a fresh client while the session is live")
                row["fresh_live"] = await fresh_client(url, session, trace, times, wait_s)
    except (PhaseError, TimeoutError) as exc:
        row["error"] = str(exc) or type(exc).__name__
        say(f"  FAILED: {row['error']}")
    return row


def exact(row: dict[str, Any]) -> bool:
    """Every text every client saw was the trace's endContent, and no phase failed."""
    if "error" in row or not (row.get("exact_typist") and row.get("exact_watcher")):
        return False
    return all(row[k].get("exact") for k in ("fresh_live", "fresh_cold") if k in row)


async def run(
    trace: Path, times: int, s3: dict[str, Any] | None, wait_s: float
) -> list[dict[str, Any]]:
    session = f"trace-{secrets.token_hex(4)}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        say(f"[1/2] router + worker ({'S3' if s3 else 'embedded store'}), session {session}")
        async with collab_stack(Path(tmp), s3, SESSION_IDLE_MS) as stack:
            rows.append(await measure_collab(stack, session, trace, times, wait_s))
        say("[2/2] @y/websocket-server (in memory)")
        async with reference_server(Path(tmp)) as ref:
            rows.append(
                await measure_reference(ref.url, ref.child.pid, session, trace, times, wait_s)
            )
    return rows


async def _main(body: Coroutine[Any, Any, T]) -> T:
    """``body``, cancelled by SIGTERM as by Ctrl-C, so that its cleanup runs either way."""
    task = asyncio.ensure_future(body)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await task


@contextmanager
def s3_bucket(wanted: bool) -> Iterator[dict[str, Any] | None]:
    if not wanted:
        yield None
        return
    from tests.s3server import start_s3_server

    say("starting an S3 server (SeaweedFS)")
    with start_s3_server() as server:
        yield server.store_kwargs(f"trace-{secrets.token_hex(4)}")


def _ensure_node_modules() -> None:
    if not REFERENCE_SERVER.exists():
        say("installing tests/js node packages (npm ci)")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_MODULES.parent,
            check=True,
            timeout=600,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trace", type=Path, required=True, help="*.json or *.json.gz")
    p.add_argument("--times", type=int, default=1, help="type the trace into this many files")
    p.add_argument(
        "--s3", action="store_true", help="the worker on SeaweedFS, not the embedded store"
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--wait", type=float, default=300, help="bound of any single wait, seconds")
    a = p.parse_args(argv)
    if a.times < 1:
        p.error("--times must be at least 1")

    try:
        loaded = load(a.trace)
        if replay(loaded) != loaded.end:
            raise TraceError(f"{a.trace}: its patches do not produce its endContent")
    except (OSError, TraceError) as exc:
        say(f"bench.trace: {exc}")
        raise SystemExit(2) from None
    meta = {
        "trace": str(a.trace),
        "keystrokes": len(loaded.txns),
        "patches": loaded.patches,
        "end_chars": len(loaded.end),
        "times": a.times,
        "storage": "s3 (SeaweedFS)" if a.s3 else "embedded",
        "session_idle_ms": SESSION_IDLE_MS,
        "settle_s": SETTLE_S,
    }
    say(f"{a.trace}: {len(loaded.txns):,} transactions, {len(loaded.end):,} characters, x{a.times}")
    _ensure_node_modules()
    try:
        with s3_bucket(a.s3) as s3:
            rows = asyncio.run(_main(run(a.trace, a.times, s3, a.wait)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("bench.trace: interrupted; every process it started is stopped")
        raise SystemExit(130) from None
    ok = all(exact(row) for row in rows)
    if a.json:
        print(json.dumps({"meta": meta, "rows": rows, "ok": ok}, indent=2))
    else:
        print(render(meta, rows))
    if not ok:
        say("bench.trace: a text was not exact, or a phase failed (see above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
