"""``collab up``: the whole system on one machine — N workers and a router, stopped in order.

Children run in their own process group, so Ctrl-C reaches only this supervisor, which then
stops them in the order that loses nothing: the router first (no new connections), then every
worker drains (flush, clients closed with 1012) and exits. SIGTERM and SIGHUP (the terminal was
closed) do the same. Should this supervisor die without stopping them (SIGKILL), each child is
sent SIGTERM by the kernel (``contract.lifeline``, Linux), so none outlives it holding its port.
Their logs go to files under the data directory; the terminal shows progress and where to
connect.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx

from contract.lifeline import child_env

START_TIMEOUT_S = 30.0
# Each asks for the ordered stop. SIGHUP is the terminal going away (closed, ssh dropped): its
# default would end this process alone and leave the children, in their own sessions, running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class UpError(RuntimeError):
    """``collab up`` cannot start; ``str()`` names the cause and the fix."""


@dataclass
class Child:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # As the servers themselves bind: a port only in TIME_WAIT after a restart is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


class Up:
    def __init__(
        self,
        workers: int,
        port: int,
        host: str,
        data_dir: Path,
        out: TextIO = sys.stdout,
    ) -> None:
        self.count = workers
        self.port = port
        self.host = host
        self.data_dir = data_dir.resolve()
        self.out = out
        self.children: list[Child] = []
        self.env = dict(os.environ)
        self.env.setdefault("ADMIN_TOKEN", secrets.token_urlsafe(18))
        self.env.setdefault("STORAGE_DIR", str(self.data_dir / "storage"))
        self.env.setdefault("WORKSPACE_DIR", str(self.data_dir / "workspace"))
        self.env.setdefault("LOG_FORMAT", "text")
        self.env.pop("PORT", None)

    def say(self, message: str) -> None:
        try:
            print(message, file=self.out, flush=True)
        except OSError:
            # The terminal is gone (closed: EIO after SIGHUP) or the pipe's reader is. What is
            # left to say goes nowhere; the stop must go on, and exit must not fail to flush.
            self._silence()

    def _silence(self) -> None:
        """Points the output's file descriptor at /dev/null: what is still buffered, and the
        flush at exit, then succeed (a failed flush at exit would turn the exit code into 120)."""
        try:
            fd = self.out.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):
            return  # not a file (a test's StringIO), or no /dev/null: nothing to redirect
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
        os.close(devnull)

    def run(self) -> int:
        """Start, serve until Ctrl-C/SIGTERM/SIGHUP or a child dies, stop in order; the exit
        code."""
        previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
        code = 0
        try:
            self._start()
            self._banner()
            while True:
                for child in self.children:
                    if child.proc.poll() is not None:
                        self.say(
                            f"{child.name} exited unexpectedly (code {child.proc.returncode}); "
                            f"see {child.log}"
                        )
                        code = 1
                        raise _Stop
                time.sleep(0.2)
        except (KeyboardInterrupt, _Stop):
            pass
        except UpError as exc:
            self.say(f"collab up: {exc}")
            code = 1
        finally:
            for sig in previous:  # a second Ctrl-C must not cut the drain short
                signal.signal(sig, signal.SIG_IGN)
            try:
                code = max(code, self._stop())
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return code

    # --- start -----------------------------------------------------------------------------

    def _start(self) -> None:
        ports = [self.port + 1 + i for i in range(self.count)]
        for port in (self.port, *ports):
            if not _port_free(self.host, port):
                raise UpError(
                    f"port {port} on {self.host} is in use; stop what uses it or pass "
                    f"--port (the router takes PORT, workers PORT+1..PORT+{self.count})"
                )
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        storage = self.env.get("MINIO_ENDPOINT") or self.env["STORAGE_DIR"]
        self.say(f"storage: {storage}")
        for i, port in enumerate(ports):
            self._spawn(f"w-{i}", "worker", port, {"WORKER_ID": f"w-{i}"})
        for child in list(self.children):
            self._wait_ready(child)
            self.say(f"  {child.name} ready on 127.0.0.1:{child.port}")
        workers = ",".join(f"127.0.0.1:{p}" for p in ports)
        router = self._spawn("router", "router", self.port, {"WORKERS": workers})
        self._wait_ready(router)
        self.say(f"  router ready on {self.host}:{self.port}")

    def _spawn(self, name: str, module: str, port: int, extra: dict[str, str]) -> Child:
        log = self.data_dir / "logs" / f"{name}.log"
        # child_env: the child is sent SIGTERM should this process die without stopping it.
        env = child_env({**self.env, **extra, "PORT": str(port), "COLLAB_HOST": self.host})
        if module == "worker":
            env["COLLAB_HOST"] = "127.0.0.1"  # only the router is reachable from outside
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C is ours to turn into an ordered stop
            )
        child = Child(name, port, proc, log)
        self.children.append(child)
        self.say(f"starting {name} (pid {proc.pid}, log {log})")
        return child

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(trust_env=False) as http:
            while time.monotonic() < deadline:
                if child.proc.poll() is not None:
                    tail = child.log.read_text(errors="replace").strip().splitlines()[-3:]
                    raise UpError(
                        f"{child.name} exited with code {child.proc.returncode} at start: "
                        + (" | ".join(tail) or f"see {child.log}")
                    )
                try:
                    if http.get(f"{child.url}/readyz", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise UpError(f"{child.name} not ready after {START_TIMEOUT_S:.0f} s; see {child.log}")

    def _banner(self) -> None:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        base = f"{shown}:{self.port}"
        rows = [
            ("web workspace", f"http://{base}/"),
            ("HTTP API", f"http://{base}/api/sessions  (description: /api/openapi.json)"),
            ("Yjs (y-websocket)", f"ws://{base}/yjs/{{session}}/{{path}}"),
            ("JSON protocol", f"ws://{base}/"),
            ("health / metrics", f"http://{base}/readyz  http://{base}/metrics"),
            ("admin token", f"{self.env['ADMIN_TOKEN']}  (Authorization: Bearer …)"),
            ("workers", ", ".join(f"{c.name}=127.0.0.1:{c.port}" for c in self.workers)),
            ("data", str(self.data_dir)),
        ]
        width = max(len(k) for k, _ in rows)
        self.say("")
        self.say(f"collab is up: {len(self.workers)} workers behind a router")
        for key, value in rows:
            self.say(f"  {key.ljust(width)}  {value}")
        self.say("Operator commands (collab workers, sessions, drain, status ...) need:")
        self.say(
            f"  export COLLAB_ROUTER=http://{base} COLLAB_ADMIN_TOKEN={self.env['ADMIN_TOKEN']}"
        )
        self.say("Press Ctrl-C to drain and stop everything.")

    @property
    def workers(self) -> list[Child]:
        return [c for c in self.children if c.name != "router"]

    # --- stop ------------------------------------------------------------------------------

    def _stop(self) -> int:
        """Router first, then every worker drains; 1 if any child had to be killed."""
        if not self.children:
            return 0
        self.say("stopping: router first, then workers drain (flush, clients sent away)")
        code = 0
        routers = [c for c in self.children if c.name == "router"]
        drain_s = int(self.env.get("DRAIN_TIMEOUT_MS", "20000") or 20000) / 1000
        for group, limit in ((routers, 10.0), (self.workers, drain_s + 10)):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            for child in group:
                try:
                    child.proc.wait(timeout=limit)
                    self.say(f"  {child.name} stopped (exit {child.proc.returncode})")
                    if child.proc.returncode not in (0, -signal.SIGTERM):
                        code = 1
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
                    self.say(f"  {child.name} did not stop in {limit:.0f} s and was killed")
                    code = 1
        self.children.clear()
        self.say("stopped." if code == 0 else "stopped, with errors (see the logs above).")
        return code
