"""`collab up` is the README's "run it": workers and a router, two clients, Ctrl-C, nothing lost;
and however it ends (Ctrl-C, SIGHUP, its terminal closed, SIGKILL), none of its processes is left.

Its children are found by the pids it prints ("starting w-0 (pid N, ...)"), each with its start
time, so a pid the system has reused is not taken for a leftover. A test that fails stops what
it started all the same: `collab up` in order, then any child still there is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import collab
from tests.support import ROOT, JsonClient

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "docs" / "examples" / "edit.py"
COLLAB = Path(sys.executable).parent / "collab"


def free_block(size: int) -> int:
    """A port such that it and the next ``size - 1`` are free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size >= 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


@dataclass(frozen=True)
class Pid:
    """A process by pid and start time (Linux /proc), so a reused pid is not taken for it."""

    pid: int
    started: str

    @staticmethod
    def _stat(pid: int) -> tuple[str, str] | None:
        """(state, start time) of ``pid``, or None when there is no such process."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
        return fields[0], fields[19]

    @classmethod
    def of(cls, pid: int) -> Pid | None:
        now = cls._stat(pid)
        return cls(pid, now[1]) if now is not None else None

    def alive(self) -> bool:
        """Running still; a zombie (exited, not yet reaped) holds no port and counts as gone."""
        now = self._stat(self.pid)
        return now is not None and now[1] == self.started and now[0] not in "ZX"


STARTED = re.compile(rb"starting (\S+) \(pid (\d+),")


def children_in(output: bytes) -> dict[str, Pid]:
    """The children `collab up` said it started, by name."""
    found = {}
    for name, pid in STARTED.findall(output):
        if (child := Pid.of(int(pid))) is not None:
            found[name.decode()] = child
    return found


async def left_after(children: Iterable[Pid], timeout: float) -> list[Pid]:
    """The children still running once ``timeout`` has passed or none is."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [c for c in children if c.alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        await asyncio.sleep(0.1)


async def stop_everything(proc: asyncio.subprocess.Process, children: Iterable[Pid]) -> None:
    """After a test, passed or failed: `collab up` stopped in order (killed if it hangs), then
    any child still running killed, so no test leaves a process behind."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    for child in await left_after(children, 30):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)


@dataclass
class RunningUp:
    proc: asyncio.subprocess.Process
    output: str
    """Everything it printed until its banner ended."""
    children: dict[str, Pid]


def up_argv(data: Path, port: int) -> list[str]:
    return [str(COLLAB), "up", "--workers", "2", "--port", str(port), "--data-dir", str(data)]


@asynccontextmanager
async def collab_up(
    data: Path, port: int, env: dict[str, str] | None = None
) -> AsyncIterator[RunningUp]:
    """`collab up` running, with what it printed up to the end of its banner."""
    proc = await asyncio.create_subprocess_exec(
        *up_argv(data, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    seen = b""
    children: dict[str, Pid] = {}
    try:
        async with asyncio.timeout(60):
            while b"Press Ctrl-C" not in seen:
                line = await proc.stdout.readline()
                assert line, f"collab up exited early: {seen.decode()}"
                seen += line
                children.update(children_in(line))
        yield RunningUp(proc, seen.decode(), children)
    finally:
        await stop_everything(proc, children.values())


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGINT) -> str:
    """Signals `collab up` (SIGINT is what Ctrl-C sends) and returns what it printed then."""
    assert proc.stdout is not None
    proc.send_signal(sig)
    async with asyncio.timeout(60):
        out = (await proc.stdout.read()).decode()
        assert await proc.wait() == 0, out
    return out


async def run_example(port: int, text: str) -> str:
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "demo/hello.txt",
        text,
        "--router",
        f"http://127.0.0.1:{port}",
        "--seconds",
        "2",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, out.decode()
    return out.decode().strip().splitlines()[-1]


async def test_two_clients_edit_through_the_router_and_ctrl_c_loses_nothing(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    port = free_block(3)
    # Embedded storage under the data directory, or the S3 server process (MinIO when set).
    env = {} if "STORAGE_DIR" in backend_env else backend_env
    async with collab_up(tmp_path / "data", port, env) as up:
        alice, bob = await asyncio.gather(
            run_example(port, "Alice was here. "), run_example(port, "Bob too. ")
        )
        assert alice == bob
        assert "Alice was here. " in alice and "Bob too. " in alice
        final = alice.removeprefix("final: ").strip("'")
        async with JsonClient.connect(f"ws://127.0.0.1:{port}") as j:
            joined = await j.join("demo", "carol")
            assert joined["containerId"] in ("w-0", "w-1")
            assert await j.get_file("hello.txt") == final
        # The banner's export line is all the operator commands need.
        exports = up.output.split("export ", 1)[1].splitlines()[0].split()
        located = await collab("locate", "demo", env=dict(e.split("=", 1) for e in exports))
        assert located.returncode == 0, located.stderr
        assert located.stdout.splitlines()[1].split()[1] == joined["containerId"]
        out = await stop(up.proc)
        assert (tmp_path / "data" / "storage").exists() == (not env)
        assert "router stopped (exit 0)" in out and "w-1 stopped (exit 0)" in out
        assert out.rstrip().endswith("stopped.")
    # Started again on the same data directory: everything is still there.
    async with collab_up(tmp_path / "data", port, env) as up:
        async with JsonClient.connect(f"ws://127.0.0.1:{port}") as j:
            await j.join("demo", "dave")
            assert await j.get_file("hello.txt") == final
        await stop(up.proc)


async def test_a_port_in_use_is_named_with_the_fix(tmp_path: Path) -> None:
    port = free_block(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port + 1))
        busy.listen()
        done = subprocess.run(
            [str(COLLAB), "up", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"port {port + 1} on 127.0.0.1 is in use" in done.stdout
    assert "--port" in done.stdout


def test_collab_router_refuses_bad_configuration_with_exit_2() -> None:
    done = subprocess.run(
        [str(COLLAB), "router", "--workers", "nohost"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "WORKERS entries must be host:port" in done.stderr


# --- nothing outlives it ---------------------------------------------------------------------

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the parent-death signal (and /proc) are Linux's"
)

# Run as the terminal's session leader, as a shell in a terminal window is: stdin (a pty) becomes
# the controlling terminal, so closing the window's end of it hangs up `collab up` (SIGHUP).
TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


async def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """What the terminal's other end shows until ``marker`` (non-blocking ``fd``)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    seen = b""
    try:
        async with asyncio.timeout(timeout):
            while marker not in seen:
                await readable.wait()
                readable.clear()
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: nothing has the terminal open any more
                    chunk = b""
                assert chunk, f"collab up exited early: {seen.decode(errors='replace')}"
                seen += chunk
    finally:
        loop.remove_reader(fd)
    return seen


@asynccontextmanager
async def collab_up_in_a_terminal(
    data: Path, port: int
) -> AsyncIterator[tuple[RunningUp, Callable[[], None]]]:
    """`collab up` as `make run` runs it in a terminal window, and a function that closes the
    window (the pty's master side), which hangs the terminal up."""
    master, slave = os.openpty()
    closed = False

    def close_window() -> None:
        nonlocal closed
        if not closed:
            closed = True
            os.close(master)

    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                TAKE_TERMINAL,
                *up_argv(data, port),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        children: dict[str, Pid] = {}
        try:
            seen = await read_until(master, b"Press Ctrl-C", 60)
            children.update(children_in(seen))
            yield RunningUp(proc, seen.decode(errors="replace"), children), close_window
        finally:
            await stop_everything(proc, children.values())
    finally:
        close_window()


def ports_free(port: int, count: int) -> bool:
    for p in range(port, port + count):
        with socket.socket() as s:
            # As the servers bind: a port left only in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


async def ports_free_within(port: int, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not ports_free(port, count):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def children_of(pid: int) -> set[int]:
    """The processes ``pid``'s main thread started, by the kernel's account."""
    listed = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in listed.split()}


@linux_only
class TestNothingOutlivesIt:
    async def test_sighup_stops_everything_in_order_as_ctrl_c_does(self, tmp_path: Path) -> None:
        """`kill -HUP`: the router stops first, the workers drain, and `collab up` exits 0."""
        port = free_block(3)
        async with collab_up(tmp_path / "data", port) as up:
            assert set(up.children) == {"w-0", "w-1", "router"}
            out = await stop(up.proc, signal.SIGHUP)
            assert out.index("router stopped (exit 0)") < out.index("w-0 stopped (exit 0)")
            assert "w-1 stopped (exit 0)" in out and out.rstrip().endswith("stopped.")
            assert await left_after(up.children.values(), 10) == []
            assert await ports_free_within(port, 3, 10)

    async def test_closing_its_terminal_stops_everything_and_frees_the_ports(
        self, tmp_path: Path
    ) -> None:
        """The window running `make run` is closed: the hang-up stops everything in order even
        though nothing it prints reaches a terminal any more (exit 0: every child stopped
        cleanly), and the next `collab up` on the same ports can start."""
        port = free_block(3)
        async with collab_up_in_a_terminal(tmp_path / "data", port) as (up, close_window):
            assert set(up.children) == {"w-0", "w-1", "router"}
            close_window()
            assert await asyncio.wait_for(up.proc.wait(), 60) == 0
            assert await left_after(up.children.values(), 10) == []
            assert await ports_free_within(port, 3, 10)

    async def test_sigkill_leaves_no_child_running_and_the_workers_drain(
        self, tmp_path: Path
    ) -> None:
        """It cannot stop anything itself: each child gets SIGTERM from the kernel, so each
        worker drains (nothing acknowledged is lost) and exits, within seconds."""
        port = free_block(3)
        data = tmp_path / "data"
        async with collab_up(data, port) as up:
            assert set(up.children) == {"w-0", "w-1", "router"}
            assert children_of(up.proc.pid) == {c.pid for c in up.children.values()}
            up.proc.kill()
            await up.proc.wait()
            assert await left_after(up.children.values(), 30) == []
            assert await ports_free_within(port, 3, 10)
        for worker in ("w-0", "w-1"):
            log = (data / "logs" / f"{worker}.log").read_text()
            assert "signal_received" in log, log[-2000:]

    @pytest.mark.parametrize("module", ["worker", "router"])
    def test_a_child_whose_parent_is_already_gone_exits_at_once(
        self, tmp_path: Path, module: str
    ) -> None:
        """The parent died while the child was still starting: the kernel will never signal,
        so the child sees it has another parent than the one named, and does not start."""
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        env = {
            **os.environ,
            "COLLAB_PARENT_PID": str(gone.pid),
            "PORT": str(free_block(1)),
            "STORAGE_DIR": str(tmp_path / "storage"),
            "WORKERS": "127.0.0.1:9",
        }
        done = subprocess.run(
            [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 1, done.stderr
        assert f"(pid {gone.pid}, COLLAB_PARENT_PID) is gone" in done.stderr

    def test_a_malformed_parent_pid_is_refused_with_exit_2(self) -> None:
        env = {**os.environ, "COLLAB_PARENT_PID": "me", "WORKERS": "127.0.0.1:9"}
        done = subprocess.run(
            [sys.executable, "-m", "router"], env=env, capture_output=True, text=True, timeout=20
        )
        assert done.returncode == 2
        assert "COLLAB_PARENT_PID must be a process id, got 'me'" in done.stderr
