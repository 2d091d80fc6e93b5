"""One live owner per session, enforced by the workers themselves (no router in these tests).

Several real workers share one storage; clients connect to them directly, as a router that
disagrees with the others would send them. Process-level faults (SIGKILL, SIGSTOP, a cut to
storage) use worker subprocesses.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from contract.routing import MISDIRECTED, OwnerHint
from tests.conftest import s3_env
from tests.faults import s3_behind_proxy
from tests.s3server import S3Server
from tests.support import (
    JsonClient,
    WorkerProcess,
    YjsClient,
    eventually,
    run_worker,
    settings_for,
    wait_until,
)
from worker.git_branch import StaleOwner
from worker.settings import StorageSettings
from worker.storage import LocalStore, SessionMeta, SessionStore

TTL_MS = 2000


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{want}}} " if want else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


async def scrape(http_base: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{http_base}/metrics")).text


async def routed_upgrade(url: str, room: str) -> Any:
    """A y-websocket upgrade as a router sends it; returns the refusal's HTTP response."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            f"{url}/yjs/{room}", additional_headers={"x-collab-router": "test-router"}
        ):
            pass
    return refused.value.response


@asynccontextmanager
async def two_workers(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    storage = StorageSettings(storage_dir=tmp_path / "storage")
    async with (
        run_worker(settings_for(storage, worker_id="w-1", lease_ttl_ms=TTL_MS)) as one,
        run_worker(settings_for(storage, worker_id="w-2", lease_ttl_ms=TTL_MS)) as two,
    ):
        yield one, two


def worker_process(tmp_path: Path, name: str, env: dict[str, str]) -> WorkerProcess:
    return WorkerProcess(
        {
            "WORKER_ID": name,
            "COLLAB_HOST": "127.0.0.1",
            "FLUSH_INTERVAL_MS": "100",
            "LEASE_TTL_MS": str(TTL_MS),
            "DRAIN_TIMEOUT_MS": "3000",
            **env,
        },
        log=tmp_path / f"{name}.log",
    )


@asynccontextmanager
async def two_worker_processes(
    tmp_path: Path,
) -> AsyncIterator[tuple[WorkerProcess, WorkerProcess]]:
    """w-1 and w-2 over one storage directory, started; afterwards w-1 is killed (woken first:
    a test may have frozen it) and w-2 stopped."""
    env = {"STORAGE_DIR": str(tmp_path / "storage")}
    one, two = worker_process(tmp_path, "w-1", env), worker_process(tmp_path, "w-2", env)
    try:
        await asyncio.gather(one.start(), two.start())  # in the try: one may start, not the other
        yield one, two
    finally:
        one.signal(signal.SIGCONT)
        one.kill()
        await two.stop()


class TestOneLiveOwner:
    async def test_a_routed_client_of_a_non_owner_is_sent_to_the_owner(
        self, tmp_path: Path
    ) -> None:
        """The non-owner answers a router 421 naming the owner, and serves nothing."""
        async with two_workers(tmp_path) as (one, two), JsonClient.connect(one.url) as alice:
            joined = await alice.join("s-own", "alice")
            assert joined["containerId"] == "w-1"
            response = await routed_upgrade(two.url, "s-own/a.txt")
            assert response.status_code == MISDIRECTED
            hint = OwnerHint.from_headers(lambda name: response.headers.get(name))
            assert hint is not None
            assert (hint.worker, hint.epoch) == ("w-1", 1)
            assert hint.address == one.settings.advertise_address
            assert "s-own" not in two.manager.sessions
            assert metric(await scrape(two.http), "collab_ownership_refused_total") >= 1

    async def test_a_direct_client_of_a_non_owner_gets_a_retryable_close_naming_it(
        self, tmp_path: Path
    ) -> None:
        async with two_workers(tmp_path) as (one, two), JsonClient.connect(one.url) as alice:
            await alice.join("s-own", "alice")
            async with YjsClient.connect(two.url, "s-own/a.txt") as y:
                await wait_until(lambda: y.close_code is not None, what="close")
                assert y.close_code == 1013 and "w-1" in y.close_reason
                assert not y.synced.is_set()
            async with JsonClient.connect(two.url) as bob:
                await bob.send({"type": "join", "sessionId": "s-own", "userId": "bob"})
                error = await bob.recv("error")
                assert error["error"] == "Session unavailable" and "w-1" in error["reason"]

    async def test_racing_claims_of_a_fresh_session_have_one_winner(self, tmp_path: Path) -> None:
        """Clients reaching two workers at once: one serves, the other sends them there."""
        async with two_workers(tmp_path) as (one, two):
            release = asyncio.Event()
            outcomes = asyncio.gather(
                *(
                    routed_outcome(w.url, f"s-race-{i}/a.txt", release)
                    for i in range(8)
                    for w in (one, two)
                )
            )
            await wait_until(
                lambda: sum(len(w.manager.sessions) for w in (one, two)) >= 8, what="claims"
            )
            for i in range(8):
                live = [w for w in (one, two) if f"s-race-{i}" in w.manager.sessions]
                assert len(live) == 1, i
            release.set()
            results = await outcomes
            for i in range(8):
                assert sorted(results[2 * i : 2 * i + 2]) == ["421", "served"], i

    async def test_an_idle_holder_lets_the_session_go_when_a_peer_asks(
        self, tmp_path: Path
    ) -> None:
        """No client left on the holder: the asker claims it at once, with the next epoch."""
        async with two_workers(tmp_path) as (one, two):
            async with JsonClient.connect(one.url) as alice:
                await alice.join("s-idle", "alice")
                await alice.file_op(type="create", path="a.txt", content="kept")
            held = one.manager.sessions["s-idle"]
            await wait_until(lambda: held.client_count == 0 and held.reserved == 0, what="idle")
            async with JsonClient.connect(two.url) as bob:
                assert (await bob.join("s-idle", "bob"))["containerId"] == "w-2"
                assert await bob.get_file("a.txt") == "kept"
            assert "s-idle" not in one.manager.sessions
            assert two.manager.sessions["s-idle"].claim.epoch == 2
            assert metric(await scrape(two.http), "collab_ownership_takeovers_total") == 0

    async def test_a_deposed_owners_commit_cannot_move_the_branch(self, tmp_path: Path) -> None:
        """w-1 owned a git session (epoch 1); w-2 took it over (epoch 2) and committed. w-1's
        old copy then commits its stale tree: refused (outcome refused), the branch is w-2's."""
        storage = SessionStore(LocalStore(tmp_path / "storage"), "setup")
        await storage.put_meta("s-git", SessionMeta.new(is_git_repo=True))
        async with two_workers(tmp_path) as (one, two):
            async with JsonClient.connect(one.url) as alice:
                await alice.join("s-git", "alice")
                await alice.file_op(type="create", path="a.txt", content="old")
            stale = one.manager.sessions["s-git"]
            await wait_until(lambda: stale.client_count == 0 and stale.reserved == 0)
            async with JsonClient.connect(two.url) as bob:
                assert (await bob.join("s-git", "bob"))["containerId"] == "w-2"
                await bob.file_op(type="update", path="a.txt", content="new")
                live = two.manager.sessions["s-git"]
                done = await two.manager.autocommit.commit(live, force=True)
                assert done is not None and done.sha
            with pytest.raises(StaleOwner):
                await one.manager.autocommit.commit(stale, force=True)
            ref = await storage.read_ref("s-git")
            assert ref is not None and (ref.sha, ref.epoch) == (done.sha, 2)
            page = await scrape(one.http)
            assert metric(page, "collab_commits_total", outcome="refused") == 1

    async def test_a_handed_off_session_is_free_for_the_next_owner(self, tmp_path: Path) -> None:
        """A hand-off (a router moved the session) releases the owner record before the
        clients are sent away: the next owner claims it plainly, no takeover, next epoch."""
        async with two_workers(tmp_path) as (one, two), JsonClient.connect(one.url) as alice:
            await alice.join("s-moved", "alice")
            await alice.file_op(type="create", path="a.txt", content="moved")
            result = await one.manager.handoff.hand_off("s-moved", 5)
            assert result["durable"]
            record = await one.manager.ownership.lookup("s-moved")
            assert record is not None and record.released and record.epoch == 1
            async with JsonClient.connect(two.url) as bob:
                assert (await bob.join("s-moved", "bob"))["containerId"] == "w-2"
                assert await bob.get_file("a.txt") == "moved"
            assert two.manager.sessions["s-moved"].claim.epoch == 2
            assert metric(await scrape(two.http), "collab_ownership_takeovers_total") == 0


async def routed_outcome(url: str, room: str, release: asyncio.Event) -> str:
    """ "served" (kept connected until ``release``) or the refusal's HTTP status."""
    try:
        async with websockets.connect(
            f"{url}/yjs/{room}", additional_headers={"x-collab-router": "test-router"}
        ) as ws:
            await asyncio.wait_for(ws.recv(), 5)  # sync step 1: served
            await release.wait()
            return "served"
    except websockets.InvalidStatus as exc:
        return str(exc.response.status_code)


class TestTakeover:
    async def test_a_killed_owner_is_taken_over_at_once(self, tmp_path: Path) -> None:
        """Nothing listens at the holder's address any more: no lease wait."""
        async with two_worker_processes(tmp_path) as (one, two):
            async with JsonClient.connect(one.url) as alice:
                await alice.join("s-kill", "alice")
                await alice.file_op(type="create", path="a.txt", content="acknowledged")
                one.kill()
            started = time.monotonic()
            async with JsonClient.connect(two.url) as bob:
                assert (await bob.join("s-kill", "bob"))["containerId"] == "w-2"
                took = time.monotonic() - started
                assert await bob.get_file("a.txt") == "acknowledged"
            assert took < TTL_MS / 1000, f"waited {took:.2f}s: a dead owner must not need a lease"
            page = await scrape(two.http)
            assert metric(page, "collab_ownership_takeovers_total", reason="gone") == 1

    async def test_a_frozen_owner_is_taken_over_after_its_lease_and_accepts_nothing_after(
        self, tmp_path: Path
    ) -> None:
        """SIGSTOP past the lease: the session moves after LEASE_TTL_MS; on SIGCONT the old
        owner refuses the edit its client sends and sends that client away."""
        async with two_worker_processes(tmp_path) as (one, two):
            async with JsonClient.connect(one.url) as stale:
                await stale.join("s-frozen", "stale")
                await stale.file_op(type="create", path="a.txt", content="before")
                one.signal(signal.SIGSTOP)
                frozen_at = time.monotonic()
                async with JsonClient.connect(two.url) as fresh:
                    await fresh.send({"type": "join", "sessionId": "s-frozen", "userId": "fresh"})
                    joined = await fresh.recv("joined", timeout=TTL_MS / 1000 + 5)
                    took = time.monotonic() - frozen_at
                    assert joined["containerId"] == "w-2"
                    assert await fresh.get_file("a.txt") == "before"
                    await fresh.file_op(type="update", path="a.txt", content="after takeover")
                # The bound: never before the holder's lease ran out, and not much after.
                assert TTL_MS / 1000 <= took <= TTL_MS / 1000 + 3, took
                page = await scrape(two.http)
                assert metric(page, "collab_ownership_takeovers_total", reason="expired") == 1
                one.signal(signal.SIGCONT)
                # Awake, w-1's old copy refuses the edit and sends its client away (or closes
                # it first: it handles nothing once its lease has run out). Never a success.
                replies: list[str] = []
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await stale.send(
                        {
                            "type": "fileOperation",
                            "data": {"type": "update", "path": "a.txt", "content": "stale write"},
                        }
                    )
                    while True:
                        replies.append((await stale.recv(timeout=5))["type"])
                assert "fileOperationSuccess" not in replies, replies
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            async with JsonClient.connect(two.url) as check:
                await check.join("s-frozen", "check")
                assert await check.get_file("a.txt") == "after takeover"

    @pytest.mark.s3
    async def test_an_owner_cut_off_from_storage_fences_itself_and_is_taken_over(
        self, tmp_path: Path, s3_server: S3Server
    ) -> None:
        """Its clients still reach it, storage does not: within T - T/5 it stops serving
        (clients closed, readiness "fenced"), and the next worker takes over at once."""
        kwargs = s3_server.store_kwargs(f"cut-{time.monotonic_ns()}")
        async with s3_behind_proxy(kwargs) as (cut_env, to_storage):
            one = worker_process(tmp_path, "w-1", cut_env)
            two = worker_process(tmp_path, "w-2", s3_env(kwargs))
            try:
                await asyncio.gather(one.start(), two.start())
                async with (
                    JsonClient.connect(one.url) as alice,
                    YjsClient.connect(one.url, "s-cut/a.txt") as editor,
                ):
                    await alice.join("s-cut", "alice")
                    await alice.file_op(type="create", path="a.txt", content="stored ")
                    await editor.wait_text("stored ")
                    await to_storage.cut("blackhole")
                    cut_at = time.monotonic()
                    await editor.insert(len(str(editor.text)), "typed during the cut")
                    await wait_until(
                        lambda: editor.close_code is not None, timeout=TTL_MS / 1000 + 3
                    )
                    fenced_after = time.monotonic() - cut_at
                    assert editor.close_code == 1012 and "lease" in editor.close_reason
                    assert fenced_after <= TTL_MS / 1000, fenced_after
                async with httpx.AsyncClient() as http:
                    ready = await http.get(f"{one.http}/readyz")
                    assert ready.status_code == 503 and ready.json()["state"] == "fenced"
                started = time.monotonic()
                async with YjsClient.connect(two.url, "s-cut/a.txt") as again:
                    await asyncio.wait_for(again.synced.wait(), 5)
                    assert time.monotonic() - started < TTL_MS / 1000  # no lease wait
                    # The editor's own re-sync would bring its typing back; here it is gone,
                    # so only what was stored is there.
                    assert str(again.text) == "stored "
                page = await scrape(two.http)
                assert metric(page, "collab_ownership_takeovers_total", reason="fenced") == 1
                # Healed: the fenced worker writes what it held (segments merge), takes a new
                # lease and is ready again, holding nothing.
                await to_storage.heal()

                async def ready_again() -> bool:
                    async with httpx.AsyncClient() as http:
                        return (await http.get(f"{one.http}/readyz")).status_code == 200

                await eventually(ready_again, 15, "w-1 ready again")
            finally:
                await asyncio.gather(one.stop(), two.stop())
