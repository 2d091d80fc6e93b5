"""One live owner per session through routers that disagree, and under process and network faults.

Real worker processes behind real routers, real y-websocket (Node) and JSON clients; faults are
SIGSTOP and loopback proxies that cut one path (tests/faults.py). Throughout each test a watcher
asks every worker whether the session is live on it: it must never be live (accepting edits) on
two workers at once, and editors must converge.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.settings import RouterSettings
from tests.conftest import s3_env
from tests.faults import s3_behind_proxy, tcp_proxy
from tests.jsclient import js_client, requires_node
from tests.pool import TOKEN, Pool, another_router, pool, session_on, sessions_owned_by
from tests.s3server import S3Server, free_port
from tests.support import JsonClient, WorkerProcess, eventually, wait_until

NAMES = ["w-0", "w-1"]


@dataclass
class SplitWatch:
    """Polls every worker for one session; a *split* is the session live (serving) on two
    workers in two polls in a row with the same epochs (a hand-off in between the two requests
    of one poll is not one)."""

    workers: dict[str, WorkerProcess]
    session: str
    splits: list[dict[str, int]] = field(default_factory=list)
    polls: int = 0

    async def _live(self, http: httpx.AsyncClient) -> dict[str, int]:
        async def one(name: str, worker: WorkerProcess) -> tuple[str, int | None]:
            try:
                r = await http.get(
                    f"{worker.http}/admin/sessions/{self.session}",
                    headers={"authorization": f"Bearer {TOKEN}"},
                    timeout=0.5,
                )
            except httpx.HTTPError:
                return name, None  # frozen or gone: serving nobody
            body = r.json() if r.status_code == 200 else {}
            return name, body.get("epoch") if body.get("state") == "live" else None

        answers = await asyncio.gather(*(one(n, w) for n, w in self.workers.items()))
        return {name: epoch for name, epoch in answers if epoch is not None}

    async def run(self) -> None:
        previous: dict[str, int] = {}
        async with httpx.AsyncClient() as http:
            while True:
                live = await self._live(http)
                self.polls += 1
                if len(live) > 1 and live == previous:
                    self.splits.append(live)
                previous = live
                await asyncio.sleep(0.1)


@asynccontextmanager
async def watching(workers: dict[str, WorkerProcess], session: str) -> AsyncIterator[SplitWatch]:
    watch = SplitWatch(workers, session)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
        await wait_until(lambda: watch.polls >= 2, 5, "the watcher to look twice")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert watch.splits == [], f"session live on two workers: {watch.splits}"


def report(fault: str, **since: float) -> None:
    """One line for docs/reliability.md: seconds since each given moment (or the figure)."""
    now = time.monotonic()
    figures = {k: round(v if k.endswith("_s") else now - v, 2) for k, v in since.items()}
    print(f"RELIABILITY {fault}: {figures}")


def router_settings(workers: list[tuple[str, int]], **kw: Any) -> RouterSettings:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=free_port(),
        workers=tuple(workers),
        admin_token=TOKEN,
        health_interval_ms=200,
        health_timeout_ms=300,
        connect_timeout_ms=500,
        handoff_timeout_ms=1000,
        router_id="router-b",
    )
    base.update(kw)
    return RouterSettings(**base)


async def live_on(p: Pool, session: str) -> list[str]:
    return [n for n, w in p.workers.items() if await session_on(w, session) is not None]


@requires_node
@pytest.mark.node
class TestRoutersThatDisagree:
    async def test_two_routers_with_different_rings_send_both_editors_to_one_worker(
        self, tmp_path: Path
    ) -> None:
        """Router A knows w-0 and w-1; router B never saw w-0 (a health check that failed
        there only). A places the session on w-0, B on w-1: w-1 answers B 421, B connects
        to w-0, and the two editors see each other."""
        session = sessions_owned_by("w-0", NAMES, 1, "split")[0]
        async with pool(tmp_path, 2) as p:
            only_w1 = [("127.0.0.1", p.workers["w-1"].port)]
            async with (
                another_router(router_settings(only_w1)) as b,
                watching(p.workers, session),
            ):
                async with (
                    js_client(f"{p.url}/yjs", f"{session}/a.txt") as via_a,
                    js_client(f"ws://127.0.0.1:{b.port}/yjs", f"{session}/a.txt") as via_b,
                ):
                    await via_a.insert("from A. ")
                    await via_b.insert("from B. ")
                    for editor in (via_a, via_b):
                        await editor.wait(expect_contains=["from A. ", "from B. "])
                    assert b.metrics.registry.get_sample_value("collab_router_redirects_total") == 1
                    assert await live_on(p, session) == ["w-0"]

    async def test_a_router_cut_off_from_the_owner_refuses_rather_than_splitting(
        self, tmp_path: Path
    ) -> None:
        """Router B reaches w-0 only through a path that is then cut. Its editor is refused
        (1013, it retries) while w-0 serves router A's editor; never a second copy on w-1.
        Healed, B's editor reconnects to w-0 and both converge."""
        session = sessions_owned_by("w-0", NAMES, 1, "cut")[0]
        async with pool(tmp_path, 2) as p:
            w0 = p.workers["w-0"]
            async with tcp_proxy("127.0.0.1", w0.port) as to_w0:
                workers = [("127.0.0.1", to_w0.port), ("127.0.0.1", p.workers["w-1"].port)]
                async with (
                    another_router(router_settings(workers)) as b,
                    watching(p.workers, session),
                    js_client(f"{p.url}/yjs", f"{session}/a.txt") as via_a,
                    js_client(f"ws://127.0.0.1:{b.port}/yjs", f"{session}/a.txt") as via_b,
                ):
                    await via_b.insert("B before. ")
                    await via_a.wait(expect_contains=["B before. "])
                    await to_w0.cut("blackhole")
                    await wait_until(lambda: "w-0" not in b.membership.ring, 5, "B loses w-0")
                    await via_a.insert("A during. ")
                    # B's editor keeps being refused: the owner lives where B cannot go.
                    await asyncio.sleep(2.0)  # the cut lasts; what must not happen is a split
                    assert await live_on(p, session) == ["w-0"]
                    assert (await via_b.dump())["text"] == "B before. "  # not served meanwhile
                    await to_w0.heal()
                    healed = time.monotonic()
                    for editor in (via_a, via_b):
                        await editor.wait(
                            expect_contains=["B before. ", "A during. "], timeout_ms=15_000
                        )
                    report("router cut off from the owner", converged_after_heal=healed)
                    assert await live_on(p, session) == ["w-0"]


class TestFaultsUnderLiveEditing:
    @requires_node
    @pytest.mark.node
    async def test_a_paused_owner_is_taken_over_and_rejoins_without_losing_an_ack(
        self, tmp_path: Path
    ) -> None:
        """SIGSTOP the owner past the health timeout while a y-websocket editor and a JSON
        client edit; SIGCONT it. Every acknowledged edit is there, the editors converge, and
        the session ends live on one worker."""
        session = sessions_owned_by("w-0", NAMES, 1, "pause")[0]
        async with pool(tmp_path, 2, health_timeout_ms=300) as p:
            acked: list[str] = []
            async with (
                watching(p.workers, session),
                js_client(f"{p.url}/yjs", f"{session}/a.txt") as editor,
            ):
                async with JsonClient.connect(p.url) as j:
                    await j.join(session, "jay")
                    await j.file_op(type="create", path="j0.txt", content="before")
                    acked.append("j0.txt")
                    await editor.insert("typed before. ")
                    p.workers["w-0"].signal(signal.SIGSTOP)
                    frozen_at = time.monotonic()
                try:
                    # The editor is sent on and, once w-1 took over, edits there.
                    await editor.wait(expect_contains=["typed before. "], timeout_ms=15_000)
                    await editor.insert("typed while w-0 sleeps. ")
                    moved_after = time.monotonic() - frozen_at
                    async with JsonClient.connect(p.url) as j2:
                        joined = await j2.join(session, "jay")
                        assert joined["containerId"] == "w-1"
                        await j2.file_op(type="create", path="j1.txt", content="during")
                        acked.append("j1.txt")
                finally:
                    p.workers["w-0"].signal(signal.SIGCONT)
                # Back: w-0 rejoins the ring, the session moves back (a hand-off).
                await p.wait_ring(set(NAMES))
                await editor.insert("typed after. ")
                await editor.wait(
                    expect_contains=["typed before. ", "typed while w-0 sleeps. ", "typed after. "]
                )
            assert moved_after < 2 + 5, moved_after  # the lease (2 s) and detection, not more
            report("owner paused (SIGSTOP), 2 s lease", edits_again_after_s=moved_after)
            async with JsonClient.connect(p.url) as check:
                await check.join(session, "check")
                for path in acked:
                    assert await check.get_file(path) is not None, path
            assert len(await live_on(p, session)) == 1

    @pytest.mark.s3
    async def test_an_owner_cut_off_from_storage_only_hands_its_sessions_on(
        self, tmp_path: Path, s3_server: S3Server
    ) -> None:
        """w-0 still reaches its clients and the router, not storage: it fences itself
        (readiness "fenced"), the router moves the session to w-1, which takes it over at once;
        healed, w-0 comes back empty-handed and nothing acknowledged was lost."""
        session = sessions_owned_by("w-0", NAMES, 1, "nostore")[0]
        kwargs = s3_server.store_kwargs(f"cut-{time.monotonic_ns()}")
        async with s3_behind_proxy(kwargs) as (through_proxy, to_storage):
            async with (
                pool(tmp_path, 2, s3_env(kwargs), worker_env={"w-0": through_proxy}) as p,
                watching(p.workers, session),
            ):
                async with JsonClient.connect(p.url) as j:
                    await j.join(session, "jay")
                    await j.file_op(type="create", path="kept.txt", content="acknowledged")
                    await to_storage.cut("blackhole")
                    cut_at = time.monotonic()
                    await p.wait_ring({"w-1"}, timeout=10)  # w-0 fenced itself: off the ring
                async with JsonClient.connect(p.url) as j2:
                    joined = await j2.join(session, "jay")
                    report("owner cut off from storage, 2 s lease", served_again=cut_at)
                    assert joined["containerId"] == "w-1"
                    assert await j2.get_file("kept.txt") == "acknowledged"
                    await j2.file_op(type="create", path="after.txt", content="on w-1")
                assert (await session_on(p.workers["w-1"], session) or {})["epoch"] == 2
                await to_storage.heal()
                await p.wait_ring(set(NAMES), timeout=15)
            async with (
                pool(tmp_path, 1, s3_env(kwargs)) as check,
                JsonClient.connect(check.url) as c,
            ):
                await c.join(session, "check")
                assert await c.get_file("kept.txt") == "acknowledged"
                assert await c.get_file("after.txt") == "on w-1"

    async def test_an_owner_cut_off_from_the_routers_only_lets_its_session_go(
        self, tmp_path: Path
    ) -> None:
        """The router reaches w-0 through a path that is cut; w-0 still reaches storage and
        w-1. Its clients drop, the router sends their reconnects to w-1, which asks w-0
        directly: w-0 holds the session with no client left and lets it go at once."""
        session = sessions_owned_by("w-0", NAMES, 1, "norouter")[0]
        async with pool(tmp_path, 2) as p:
            w0 = p.workers["w-0"]
            async with tcp_proxy("127.0.0.1", w0.port) as to_w0:
                p.addresses[p.addresses.index(("127.0.0.1", w0.port))] = ("127.0.0.1", to_w0.port)
                await wait_until(
                    lambda: (
                        (info := p.router.membership.find("w-0")) is not None
                        and info.port == to_w0.port
                        and "w-0" in p.router.membership.ring
                    ),
                    10,
                    "the router reaching w-0 through the proxy",
                )
                async with watching(p.workers, session):
                    async with JsonClient.connect(p.url) as j:
                        await j.join(session, "jay")
                        await j.file_op(type="create", path="a.txt", content="acknowledged")
                    async with JsonClient.connect(p.url) as j:
                        await j.join(session, "jay")  # a live client on w-0 again
                        await to_w0.cut("refuse")
                        cut_at = time.monotonic()
                    await p.wait_ring({"w-1"}, timeout=10)

                    async def served_by_w1() -> dict[str, Any] | None:
                        async with JsonClient.connect(p.url) as again:
                            joined = await again.join(session, "jay")
                            content = await again.get_file("a.txt")
                            return joined if content == "acknowledged" else None

                    joined = await eventually(served_by_w1, 10, "the session served by w-1")
                    report("owner cut off from the routers", served_again=cut_at)
                    assert joined["containerId"] == "w-1"
                    assert await session_on(w0, session) is None
