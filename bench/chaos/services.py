"""The cluster's long-lived processes: started in their host, signalled, restarted by name.

Each process is started in a session of its own (a Ctrl-C at the terminal reaches the
orchestrator only, which then stops everything in order) and, where util-linux's ``setpriv`` is
installed, with a parent-death signal: if the orchestrator itself is killed, its children die
with it instead of holding ports and namespaces. ``ip netns exec`` execs the command, so the pid
here is the process's own (SIGSTOP and SIGKILL reach it, not a wrapper). Output goes to
``RUN_DIR/logs/{name}.log``, appended across restarts, each start marked.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _death_prefix() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    prefix: list[str] = field(default_factory=list)
    ready_url: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # Down or frozen because a fault (or the orchestrator) did it: the monitor leaves it alone.
    held: bool = False
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (again); call from the event loop's thread (the death signal follows the
        thread that forks)."""
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- chaos: start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*_death_prefix(), *self.prefix, *self.argv],
                env={**os.environ, **self.env},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self.held = False

    def signal(self, sig: signal.Signals) -> None:
        if self.running and self.process is not None:
            self.process.send_signal(sig)

    async def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def kill(self) -> None:
        """SIGKILL and reap (bounded: a process in uninterruptible sleep is not waited for)."""
        self.held = True
        self.signal(signal.SIGKILL)
        await self.wait_exit(5)

    async def terminate(self, grace: float) -> None:
        """SIGTERM (and SIGCONT, in case it is frozen), then SIGKILL after ``grace``."""
        self.held = True
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)
        if not await self.wait_exit(grace):
            await self.kill()

    def kill_now(self) -> None:
        """For the last-resort cleanup path, outside any event loop."""
        if self.running and self.process is not None:
            self.process.kill()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    async def wait_ready(self, timeout: float) -> None:
        """Until ``ready_url`` answers 200; raises with the log's tail if it does not in time."""
        if self.ready_url is None:
            return
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                if not self.running and not self.held:
                    raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
                try:
                    if (await http.get(self.ready_url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready at {self.ready_url} after {timeout:.0f}s:\n"
                        f"{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def python_service(
    name: str,
    module: str,
    env: Mapping[str, str],
    run_dir: Path,
    prefix: Sequence[str],
    ready_url: str | None,
) -> Service:
    return Service(
        name=name,
        argv=[sys.executable, "-m", module],
        env=dict(env),
        log_path=run_dir / "logs" / f"{name}.log",
        prefix=list(prefix),
        ready_url=ready_url,
    )
