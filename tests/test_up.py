"""`collab up` is the README's "run it": workers and a router, two clients, Ctrl-C, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def collab_up(
    data: Path, port: int, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`collab up` running, and the banner it printed once up."""
    proc = await asyncio.create_subprocess_exec(
        str(COLLAB),
        "up",
        "--workers",
        "2",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    seen = []
    try:
        async with asyncio.timeout(60):
            while b"collab is up" not in (line := await proc.stdout.readline()):
                assert line, f"collab up exited early: {b''.join(seen).decode()}"
                seen.append(line)
            banner = [line]
            while b"Press Ctrl-C" not in line:
                line = await proc.stdout.readline()
                assert line, f"collab up exited early: {b''.join(banner).decode()}"
                banner.append(line)
        yield proc, b"".join(banner).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
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
    async with collab_up(tmp_path / "data", port, env) as (up, banner):
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
        exports = banner.split("export ", 1)[1].splitlines()[0].split()
        located = await collab("locate", "demo", env=dict(e.split("=", 1) for e in exports))
        assert located.returncode == 0, located.stderr
        assert located.stdout.splitlines()[1].split()[1] == joined["containerId"]
        out = await stop(up)
        assert (tmp_path / "data" / "storage").exists() == (not env)
        assert "router stopped (exit 0)" in out and "w-1 stopped (exit 0)" in out
        assert out.rstrip().endswith("stopped.")
    # Started again on the same data directory: everything is still there.
    async with collab_up(tmp_path / "data", port, env) as (up, _):
        async with JsonClient.connect(f"ws://127.0.0.1:{port}") as j:
            await j.join("demo", "dave")
            assert await j.get_file("hello.txt") == final
        await stop(up)


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
