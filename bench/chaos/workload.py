"""The chaos run's clients, as one process on the client host.

    python -m bench.chaos.workload --routers ws://IP:PORT[,ws://IP:PORT] --run-dir DIR --seed N
        [--sessions K] [--js N] [--py N] [--json N] [--rate R] [--settle-timeout S]

Editors (unmodified y-websocket providers under Node, pycrdt Providers) and JSON-protocol clients
spread over K sessions and over every router; each writes its history to
``RUN_DIR/clients/{client}.jsonl``, one JSON object a line with ``t`` (time.time()), ``client``,
``kind`` (``yjs-js`` | ``yjs-py`` | ``json``), ``session`` and ``ev``:

==============  ===============================================================================
ev              fields, meaning
==============  ===============================================================================
start           router, path (editors) or shared (JSON: the editors' files it appends to)
connected       router (JSON: also worker, the join's containerId)
disconnected    code, reason (code null: no close frame, e.g. a timeout or a reset)
synced          editors: sync step 2 received; JSON: joined and getFiles answered
insert          path, token: an editor inserted a token into its local document
send            req, op (create | update), path, token: a JSON file operation sent
ack             req, op, path, token: its fileOperationSuccess (acknowledged means stored)
error           req, op, path, token, error [, reason]: refused, or no answer (never retried);
                just error: a JSON client's last reads for its final state failed
stop            the workload stopped writing new tokens (SIGUSR1)
final           files {path: text | null}, connected, synced, settled
==============  ===============================================================================

Lifecycle: every client connects and syncs once → ``RUN_DIR/workload.ready``; edits at ``--rate``
tokens per second per client until SIGUSR1; then no new tokens, and the workload waits (at most
``--settle-timeout``) until every client is connected and synced, sees every token it must
(its own inserts; its acknowledged operations) and agrees with every other client of each file,
the same for two checks in a row; then writes every ``final`` (within 25 s: editors' texts, JSON
clients' fresh reads of every file they touched) and exits 0 (``settled`` says whether that
wait succeeded). SIGTERM (or the parent's death) aborts with exit 143 and no ``final``. Exit 3:
not every client synced within ``--ready-timeout``. Without SIGUSR1, ``--max-run`` stops it.

Placement (``plan``): sessions ``chaos-{seed}-{k}``; editors two by two per session, JS and
Python alternating and on alternating routers, on ``shared.txt`` (then ``notes/b.txt`` once
every session has a pair); JSON clients round-robin over the sessions, appending to their
session's editor files and creating (at most 8) files of their own under ``own/``. Client
``js0``'s tokens are ``<js0-1>``, ``<js0-2>``, ...; the Node editors' stderr goes to
``RUN_DIR/editors-node.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from bench.chaos.clients import Final, History, JsonClient, PyEditor, Status

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = Path(__file__).with_name("editors.mjs")
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
KINDS = {"js": "yjs-js", "py": "yjs-py", "json": "json"}
EDITOR_FILES = ("shared.txt", "notes/b.txt")
POLL_S = 0.5
FINAL_S = 25.0  # the clients' own reads are bounded by 20 s
STOP_S = 10.0  # for the clients' tasks to end once cancelled
ABORTED = 143


@dataclass(frozen=True)
class Spec:
    """One client of the plan."""

    client: str
    kind: str
    session: str
    router: str
    path: str | None  # editors: the file they edit
    shared: tuple[str, ...] = ()  # JSON: the editors' files of their session


def plan(
    seed: int, routers: list[str], sessions: int, js: int, py: int, json_clients: int
) -> list[Spec]:
    """Editors go two by two to a session (alternating JS and Python where both remain, and
    alternating routers, so one file has both kinds and both routers), a second file per
    session once every session has a pair; JSON clients round-robin over the sessions."""
    ids = [f"chaos-{seed}-{k}" for k in range(sessions)]
    order: list[str] = []
    left = {"js": js, "py": py}
    while left["js"] or left["py"]:
        for kind in ("js", "py"):
            if left[kind]:
                order.append(kind)
                left[kind] -= 1
    specs: list[Spec] = []
    counts = {"js": 0, "py": 0}
    for e, kind in enumerate(order):
        path = EDITOR_FILES[(e // (2 * sessions)) % len(EDITOR_FILES)]
        name = f"{kind}{counts[kind]}"
        counts[kind] += 1
        session = ids[(e // 2) % sessions]
        specs.append(Spec(name, KINDS[kind], session, routers[e % len(routers)], path))
    for j in range(json_clients):
        session = ids[j % sessions]
        shared = tuple(sorted({s.path for s in specs if s.session == session and s.path}))
        router = routers[(j + 1) % len(routers)]
        specs.append(Spec(f"json{j}", "json", session, router, None, shared))
    return specs


class Client(Protocol):
    name: str
    ever_synced: bool
    closed: bool

    async def run(self, interval: float, stop: asyncio.Event) -> None: ...

    def status(self) -> Status: ...

    async def final(self) -> Final: ...


class NodeEditors:
    """Every JS editor in one Node process (bench/chaos/editors.mjs): its events go to the
    editors' histories, its answers to ``state``/``final`` requests come back here."""

    def __init__(
        self, specs: list[Spec], histories: dict[str, History], seed: int, log: Path
    ) -> None:
        self.log = log
        self.specs = {s.client: s for s in specs}
        self.histories = histories
        self.seed = seed
        self.connected: dict[str, bool] = dict.fromkeys(self.specs, False)
        self.synced: dict[str, bool] = dict.fromkeys(self.specs, False)
        self.ever_synced: dict[str, bool] = dict.fromkeys(self.specs, False)
        self._proc: asyncio.subprocess.Process | None = None
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    async def start(self, interval: float) -> None:
        config = {
            "seed": self.seed,
            "interval_ms": interval * 1000,
            "clients": [
                {
                    "client": s.client,
                    "router": s.router,
                    "url": f"{s.router}/yjs",
                    "room": f"{s.session}/{s.path}",
                    "path": s.path,
                }
                for s in self.specs.values()
            ],
        }
        with _append(self.log) as err:
            self._proc = await asyncio.create_subprocess_exec(
                "node",
                str(NODE_SCRIPT),
                f"--config={json.dumps(config)}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=256 * 1024 * 1024,
            )

    async def read(self) -> None:
        """Route the Node process's lines until it exits (then fail: editors are gone)."""
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            message = json.loads(line)
            if "op" in message:
                future = self._answers.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            client, ev, t = message.pop("client"), message.pop("ev"), message.pop("t")
            if ev == "connected":
                self.connected[client] = True
            elif ev == "disconnected":
                self.connected[client] = self.synced[client] = False
            elif ev == "synced":
                self.synced[client] = self.ever_synced[client] = True
            self.histories[client].write(ev, t=t, **message)
        code = await self._proc.wait()
        raise RuntimeError(f"the Node editors exited with {code} (see editors-node.log)")

    async def _send(self, command: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(command) + "\n").encode())
        await self._proc.stdin.drain()

    async def ask(self, op: str, timeout: float = 30) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[self._next] = future
        await self._send({"op": op, "id": self._next})
        async with asyncio.timeout(timeout):
            return await future

    async def stop_editing(self) -> None:
        await self._send({"op": "stop"})

    async def statuses(self) -> list[Status]:
        clients = (await self.ask("state"))["clients"]
        return [
            Status(
                name,
                state["connected"],
                state["synced"],
                state["missing"],
                {(self.specs[name].session, str(self.specs[name].path)): state["sha1"]},
            )
            for name, state in clients.items()
        ]

    async def finals(self) -> dict[str, Final]:
        clients = (await self.ask("final", FINAL_S))["clients"]
        finals = {}
        for name, state in clients.items():
            text = state["text"]
            finals[name] = Final(
                {str(self.specs[name].path): text}, state["connected"], state["synced"]
            )
        return finals

    async def close(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self._send({"op": "quit"})
        try:
            async with asyncio.timeout(5):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


class Workload:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir: Path = args.run_dir
        routers = [r.strip().rstrip("/") for r in args.routers.split(",") if r.strip()]
        self.specs = plan(args.seed, routers, args.sessions, args.js, args.py, args.json)
        self.interval = 1.0 / args.rate
        self.stop = asyncio.Event()
        self.abort = asyncio.Event()
        clients_dir = self.run_dir / "clients"
        clients_dir.mkdir(parents=True, exist_ok=True)
        self.histories = {
            s.client: History(clients_dir / f"{s.client}.jsonl", s.client, s.kind, s.session)
            for s in self.specs
        }
        self.clients: list[Client] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.leftover = 0
        for s in self.specs:
            history = self.histories[s.client]
            if s.kind == "yjs-py":
                assert s.path is not None
                self.clients.append(
                    PyEditor(s.client, s.session, s.path, s.router, history, args.seed)
                )
            elif s.kind == "json":
                self.clients.append(
                    JsonClient(s.client, s.session, list(s.shared), s.router, history, args.seed)
                )
        js = [s for s in self.specs if s.kind == "yjs-js"]
        self.node = (
            NodeEditors(js, self.histories, args.seed, self.run_dir / "editors-node.log")
            if js
            else None
        )

    async def main(self) -> int:
        for s in self.specs:
            fields: dict[str, Any] = {"router": s.router}
            fields.update({"path": s.path} if s.path else {"shared": list(s.shared)})
            self.histories[s.client].write("start", **fields)
        tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._watch_parent())]
        self._tasks = tasks
        try:
            if self.node is not None:
                await self.node.start(self.interval)
                tasks.append(asyncio.create_task(self.node.read()))
            tasks += [asyncio.create_task(c.run(self.interval, self.stop)) for c in self.clients]
            return await self._lifecycle()
        finally:
            for client in self.clients:
                client.closed = True  # their loops end even if a cancellation went astray
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=STOP_S)
            self.leftover = len(pending)
            if pending:
                say(f"{len(pending)} client tasks did not stop within {STOP_S:g} s")
            if self.node is not None:
                await self.node.close()
            for history in self.histories.values():
                history.close()

    def _check_tasks(self) -> None:
        """A client task that died (a bug, or the Node process exiting) ends the run."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError("a client task failed") from task.exception()

    async def _lifecycle(self) -> int:
        if not await self._until(self._ready, self.args.ready_timeout):
            if self.abort.is_set():
                return ABORTED
            late = [c for c in self._names() if not self._ever_synced(c)]
            say(f"not every client synced within {self.args.ready_timeout:g} s: {late}")
            return 3
        (self.run_dir / "workload.ready").write_text(f"{time.time()}\n")
        say(f"ready: {len(self.specs)} clients")
        if not await self._until(lambda: self.stop.is_set(), self.args.max_run):
            if self.abort.is_set():
                return ABORTED
            say(f"no SIGUSR1 within --max-run {self.args.max_run:g} s: stopping anyway")
        self.stop.set()
        if self.node is not None:
            await self.node.stop_editing()
        for history in self.histories.values():
            history.write("stop")
        settled = await self._settle()
        if self.abort.is_set():
            return ABORTED
        await self._finals(settled)
        say(f"final states written (settled={settled})")
        return 0

    async def _until(self, condition: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            self._check_tasks()
            if self.abort.is_set() or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    def _names(self) -> list[str]:
        return [s.client for s in self.specs]

    def _ever_synced(self, name: str) -> bool:
        if self.node is not None and name in self.node.ever_synced:
            return self.node.ever_synced[name]
        return any(c.name == name and c.ever_synced for c in self.clients)

    def _ready(self) -> bool:
        return all(self._ever_synced(name) for name in self._names())

    async def _statuses(self) -> list[Status]:
        statuses = [c.status() for c in self.clients]
        if self.node is not None:
            statuses += await self.node.statuses()
        return statuses

    async def _settle(self) -> bool:
        """Connected, synced, own tokens seen, and one text per file, twice in a row."""
        deadline = time.monotonic() + self.args.settle_timeout
        in_a_row = 0
        last: list[str] = []
        while time.monotonic() < deadline and not self.abort.is_set():
            self._check_tasks()
            statuses = await self._statuses()
            views: dict[tuple[str, str], set[str]] = {}
            for status in statuses:
                for key, value in status.digests.items():
                    views.setdefault(key, set()).add(value)
            last = [
                f"{s.client} (connected={s.connected} synced={s.synced} missing={s.missing_own})"
                for s in statuses
                if not (s.connected and s.synced and s.missing_own == 0)
            ]
            last += [f"{'/'.join(k)} differs" for k, v in sorted(views.items()) if len(v) > 1]
            in_a_row = 0 if last else in_a_row + 1
            if in_a_row >= 2:
                return True
            await asyncio.sleep(POLL_S)
        say(f"not settled within {self.args.settle_timeout:g} s: {'; '.join(last)}")
        return False

    async def _finals(self, settled: bool) -> None:
        """Everyone's final state at once, bounded (the orchestrator waits for our exit)."""
        finals: dict[str, Final] = {}

        async def node() -> None:
            assert self.node is not None
            try:
                finals.update(await self.node.finals())
            except TimeoutError:
                say(f"the Node editors gave no final state within {FINAL_S:g} s")

        async def one(client: Client) -> None:
            try:
                async with asyncio.timeout(FINAL_S):
                    finals[client.name] = await client.final()
            except TimeoutError:
                say(f"{client.name}: no final state within {FINAL_S:g} s")

        await asyncio.gather(
            *([node()] if self.node is not None else []), *(one(c) for c in self.clients)
        )
        for name, final in sorted(finals.items()):
            self.histories[name].write(
                "final",
                files=final.files,
                connected=final.connected,
                synced=final.synced,
                settled=settled,
            )

    async def _watch_parent(self) -> None:
        parent = os.getppid()
        while not self.abort.is_set():
            await asyncio.sleep(1)
            if os.getppid() != parent:
                say("the parent process is gone: aborting")
                self.abort.set()
                return


def _append(path: Path) -> BinaryIO:
    # for the child's stderr: the child keeps its own copy of the descriptor
    return open(path, "ab")


def say(message: str) -> None:
    print(f"workload: {message}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos.workload", description=__doc__)
    p.add_argument("--routers", required=True, help="ws://IP:PORT[,ws://IP:PORT]")
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--js", type=int, default=4, help="y-websocket editors (Node)")
    p.add_argument("--py", type=int, default=4, help="pycrdt editors")
    p.add_argument("--json", type=int, default=4, help="JSON-protocol clients")
    p.add_argument("--rate", type=float, default=1.0, help="tokens per second per client")
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--max-run", type=float, default=24 * 3600.0, help="stop without SIGUSR1")
    args = p.parse_args(argv)
    if args.sessions < 1 or not 0 < args.rate <= 50 or min(args.js, args.py, args.json) < 0:
        p.error("--sessions must be ≥ 1, --rate in (0, 50], client counts ≥ 0")
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    if not routers or not all(r.startswith(("ws://", "wss://")) for r in routers):
        p.error("--routers takes ws://HOST:PORT[,ws://HOST:PORT...]")
    if args.js + args.py + args.json == 0:
        p.error("no clients: --js, --py and --json are all 0")
    if args.js and (shutil.which("node") is None or not (NODE_MODULES / "y-websocket").is_dir()):
        p.error(f"--js needs node on PATH and {NODE_MODULES} (npm ci in tests/js)")
    return args


async def _run(args: argparse.Namespace) -> int:
    workload = Workload(args)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, workload.stop.set)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, workload.abort.set)
    code = await workload.main()
    if workload.leftover:  # asyncio.run would wait for them without a bound
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    random.seed(args.seed)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
