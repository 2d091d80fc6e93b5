"""Operator commands against a real router and worker processes: tables, JSON, exit codes."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import websockets

from router.settings import RouterSettings
from tests.cli import Done, collab
from tests.faults import s3_behind_proxy
from tests.jsclient import js_client, requires_node
from tests.pool import TOKEN, Pool, another_router, pool, sessions_owned_by
from tests.s3server import free_port, start_s3_server
from tests.support import JsonClient, make_repo, wait_until

NAMES = ["w-0", "w-1", "w-2"]


async def cli(p: Pool, *args: str, token: str | None = TOKEN, **env: str) -> Done:
    base = {"COLLAB_ROUTER": p.http}
    if token is not None:
        base["COLLAB_ADMIN_TOKEN"] = token
    return await collab(*args, env={**base, **env})


def json_lines(done: Done) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def state_of(p: Pool, worker: str) -> str | None:
    info = p.router.membership.find(worker)
    return None if info is None else info.state


def header(done: Done) -> list[str]:
    return done.stdout.splitlines()[0].split()


class TestReadingThePool:
    async def test_workers_sessions_and_locate_as_tables_and_json(self, tmp_path: Path) -> None:
        sessions = [sessions_owned_by(w, NAMES, 1, "read")[0] for w in NAMES]
        async with pool(tmp_path, 3) as p, AsyncExitStack() as stack:
            for i, s in enumerate(sessions):
                j = await stack.enter_async_context(JsonClient.connect(p.url))
                await j.join(s, f"user-{i}")
            await wait_until(
                lambda: all(i.sessions == 1 for i in p.router.membership.workers.values()),
                10,
                "every worker reporting its session",
            )

            table = await cli(p, "workers")
            assert table.returncode == 0, table.stderr
            assert header(table)[:5] == ["WORKER", "ADDRESS", "STATE", "SESSIONS", "CONNECTIONS"]
            rows = json_lines(await cli(p, "workers", "--json"))
            assert [(r["id"], r["state"], r["sessions"]) for r in rows] == [
                (w, "active", 1) for w in NAMES
            ]
            assert all(r["connections"] == 1 and r["storage"] == "ok" for r in rows)

            listed = json_lines(await cli(p, "sessions", "--json"))
            assert {(r["sessionId"], r["worker"]) for r in listed} == set(
                zip(sessions, NAMES, strict=True)
            )
            assert all(r["clients"] == 1 for r in listed)
            assert all(r["epoch"] == 1 and r["ownedSince"] for r in listed)
            one = await cli(p, "sessions", "--worker", "w-1")
            assert header(one)[:2] == ["SESSION", "WORKER"]
            assert [line.split()[0] for line in one.stdout.splitlines()[1:]] == [sessions[1]]

            located = json_lines(await cli(p, "locate", sessions[2], "--json"))[0]
            assert located["owner"] == "w-2" and located["live"] is True
            assert located["liveOn"] == ["w-2"]
            # The ownership record beside the ring's answer: holder, epoch, since.
            assert (located["holder"], located["epoch"]) == ("w-2", 1)
            assert located["holderAddress"] == p.router.membership.find("w-2").address
            assert located["ownedSince"] and located["released"] is False
            cold = json_lines(await cli(p, "locate", "never-opened", "--json"))[0]
            assert cold["owner"] == p.owner("never-opened") and cold["live"] is False
            assert cold["holder"] is None and "recordError" not in cold
            assert header(await cli(p, "locate", "never-opened"))[:6] == [
                "SESSION",
                "OWNER",
                "ADDRESS",
                "HOLDER",
                "EPOCH",
                "OWNED",
            ]

    async def test_status_is_one_screen_and_json(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p, JsonClient.connect(p.url) as j:
            await j.join("status-s", "alice")
            await j.file_op(type="create", path="a.txt", content="x")
            screen = await cli(p, "status")
            assert screen.returncode == 0, screen.stderr
            text = screen.stdout
            assert "router" in text and "ready" in text and "2 active" in text
            assert "1 live, 1 connections" in text
            assert "storage  ok on every worker" in text
            assert "client auth OFF" in text
            body = json.loads((await cli(p, "status", "--json")).stdout)
            assert body["totals"]["sessions"] == 1 and body["totals"]["connections"] == 1
            assert {w["id"] for w in body["workers"]} == {"w-0", "w-1"}
            assert body["router"]["ready"] is True


class TestErrors:
    async def test_wrong_missing_and_unconfigured_tokens_and_an_absent_router(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 1) as p:
            wrong = await cli(p, "workers", token="nope")
            assert wrong.returncode == 1
            assert f"router at {p.http} refused the token" in wrong.stderr
            missing = await cli(p, "workers", token=None)
            assert missing.returncode == 2 and "COLLAB_ADMIN_TOKEN is not set" in missing.stderr
            unknown = await cli(p, "drain", "w-7")
            assert unknown.returncode == 1
            assert "no worker named w-7; known: w-0" in unknown.stderr
            assert state_of(p, "w-0") == "active"
            no_session = await cli(p, "commit", "never-existed")
            assert no_session.returncode == 1 and "no session never-existed" in no_session.stderr
            for verb in ("commit", "locate"):
                hostile = await cli(p, verb, "../etc")
                assert hostile.returncode == 2 and "invalid session id '../etc'" in hostile.stderr
            async with httpx.AsyncClient() as http:
                auth = {"authorization": f"Bearer {TOKEN}"}
                r = await http.post(p.http + "/admin/sessions/a..b/commit", headers=auth)
                assert r.status_code == 400 and "invalid session id" in r.json()["error"]
                r = await http.get(p.http + "/admin/sessions/a%20b", headers=auth)
                assert r.status_code == 400

            # The worker's own admin API: refused without the token, with a wrong one.
            worker = p.workers["w-0"]
            async with httpx.AsyncClient() as http:
                assert (await http.get(worker.http + "/admin/status")).status_code == 401
                bad = {"authorization": "Bearer nope"}
                r = await http.post(worker.http + "/admin/drain", headers=bad)
                assert r.status_code == 401
                r = await http.get(p.http + "/admin/status", headers=bad)
                assert r.status_code == 401
            assert state_of(p, "w-0") == "active"

        gone = await collab(
            "workers", env={"COLLAB_ROUTER": f"127.0.0.1:{free_port()}", "COLLAB_ADMIN_TOKEN": "t"}
        )
        assert (
            gone.returncode == 1 and "cannot reach the router at http://127.0.0.1:" in gone.stderr
        )

    async def test_a_router_without_admin_token_refuses_every_admin_call(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 1) as p:
            settings = RouterSettings(
                host="127.0.0.1", port=free_port(), workers=(("127.0.0.1", p.workers["w-0"].port),)
            )
            async with another_router(settings) as bare:
                done = await collab(
                    "workers",
                    env={
                        "COLLAB_ROUTER": f"http://127.0.0.1:{bare.port}",
                        "COLLAB_ADMIN_TOKEN": TOKEN,
                    },
                )
                assert done.returncode == 1 and "admin API disabled" in done.stderr
                async with httpx.AsyncClient() as http:
                    r = await http.post(
                        f"http://127.0.0.1:{bare.port}/admin/workers/w-0/drain",
                        headers={"authorization": f"Bearer {TOKEN}"},
                    )
                    assert r.status_code == 403

    async def test_a_router_in_mid_rotation_takes_both_tokens_and_sends_the_new_one(
        self, tmp_path: Path
    ) -> None:
        async with pool(tmp_path, 1) as p:  # the worker knows only the new token (TOKEN)
            settings = RouterSettings(
                host="127.0.0.1",
                port=free_port(),
                workers=(("127.0.0.1", p.workers["w-0"].port),),
                admin_token=f"{TOKEN},old-token",
            )
            async with another_router(settings) as rotating:
                env = {"COLLAB_ROUTER": f"http://127.0.0.1:{rotating.port}"}
                for token in (TOKEN, "old-token"):
                    done = await collab(
                        "drain", "w-0", "--wait", env={**env, "COLLAB_ADMIN_TOKEN": token}
                    )
                    assert done.returncode == 0, done.stderr  # router → worker with TOKEN
                    undone = await collab(
                        "undrain", "w-0", env={**env, "COLLAB_ADMIN_TOKEN": token}
                    )
                    assert undone.returncode == 0, undone.stderr

    async def test_usage_errors_exit_2(self) -> None:
        done = await collab(
            "autoscale",
            "--target-sessions-per-worker",
            "5",
            "--min",
            "4",
            "--max",
            "2",
            env={"COLLAB_ADMIN_TOKEN": "t"},
        )
        assert done.returncode == 2 and "--min 4 is above --max 2" in done.stderr
        assert (await collab("drain")).returncode == 2  # no worker named


@pytest.mark.node
@requires_node
class TestDrain:
    async def test_drain_wait_moves_live_clients_of_both_protocols_and_loses_nothing(
        self, tmp_path: Path
    ) -> None:
        moving = sessions_owned_by("w-1", NAMES, 2, "op-drain")
        async with pool(tmp_path, 3) as p, AsyncExitStack() as stack:
            yjs = {
                s: await stack.enter_async_context(js_client(f"{p.url}/yjs", f"{s}/f.txt"))
                for s in moving
            }
            acked: dict[str, list[str]] = {s: [] for s in moving}
            stop = anyio.Event()

            async def json_editor(session: str) -> None:
                """Creates one file per edit; reconnects (and rejoins) when sent away."""
                i = 0
                while not stop.is_set():
                    try:
                        async with JsonClient.connect(p.url) as j:
                            await j.join(session, "json-user")
                            while not stop.is_set():
                                path = f"json/{i}.txt"
                                reply = await j.file_op(type="create", path=path, content=str(i))
                                if reply["type"] == "fileOperationSuccess":
                                    acked[session].append(path)
                                i += 1
                                await anyio.sleep(0.02)  # pacing: a steady stream of edits
                    except (websockets.ConnectionClosed, OSError, TimeoutError, KeyError):
                        await anyio.sleep(0.05)  # back off before reconnecting, as clients do

            for s, c in yjs.items():
                await c.insert(f"[{s}:before]")
            async with anyio.create_task_group() as tg:
                for s in moving:
                    tg.start_soon(json_editor, s)
                await wait_until(lambda: all(len(a) >= 5 for a in acked.values()), 10, "edits")
                drain = tg.start_soon  # the command runs while both kinds of client edit
                result: list[Done] = []

                async def run_drain() -> None:
                    result.append(await cli(p, "drain", "w-1", "--wait", "--timeout", "60"))

                drain(run_drain)
                for n in range(5):
                    for s, c in yjs.items():
                        await c.insert(f"[{s}:during{n}]")
                    await anyio.sleep(0.05)  # pacing: spread the edits over the drain
                await wait_until(lambda: bool(result), 90, "collab drain --wait")
                for s, c in yjs.items():
                    await c.insert(f"[{s}:after]")
                before_stop = {s: len(a) for s, a in acked.items()}
                await wait_until(
                    lambda: all(len(acked[s]) > before_stop[s] + 3 for s in moving),
                    20,
                    "JSON edits on the new owners",
                )
                stop.set()

            done = result[0]
            assert done.returncode == 0, done.stderr
            assert "draining w-1:" in done.stderr and "no sessions left" in done.stderr
            assert header(done)[:3] == ["WORKER", "STATE", "SESSIONS"]
            assert done.stdout.splitlines()[1].split()[:3] == ["w-1", "draining", "0"]
            async with httpx.AsyncClient() as http:
                status = (
                    await http.get(
                        p.workers["w-1"].http + "/admin/status",
                        headers={"authorization": f"Bearer {TOKEN}"},
                    )
                ).json()
            assert status["sessions"] == 0 and status["state"] == "draining"
            assert "w-1" not in p.router.membership.ring

            for s, c in yjs.items():
                tokens = [f"[{s}:before]", f"[{s}:after]"] + [f"[{s}:during{n}]" for n in range(5)]
                state = await c.wait(expect_contains=tokens, timeout_ms=15_000)
                assert all(t in state["text"] for t in tokens)
                assert c.reconnects >= 1
            for s in moving:
                async with JsonClient.connect(p.url) as j:
                    assert (await j.join(s, "checker"))["containerId"] != "w-1"
                    files = set(await j.get_files())
                    missing = [f for f in acked[s] if f not in files]
                    assert not missing, f"{s}: acknowledged but lost: {missing}"

            undrained = await cli(p, "undrain", "w-1", "--json")
            assert json_lines(undrained)[0]["state"] == "active"
            await p.wait_ring(set(NAMES))

    async def test_drain_state_survives_a_router_restart(self, tmp_path: Path) -> None:
        async with pool(tmp_path, 2) as p:
            drained = json_lines(await cli(p, "drain", "w-0", "--wait", "--json"))
            assert drained == [
                {
                    "worker": "w-0",
                    "state": "draining",
                    "sessions": 0,
                    "sessionsLeft": [],
                    "seconds": drained[0]["seconds"],
                    "notDurable": [],
                }
            ]
            workers = tuple(("127.0.0.1", w.port) for w in p.workers.values())
            settings = RouterSettings(
                host="127.0.0.1", port=free_port(), workers=workers, admin_token=TOKEN
            )
            async with another_router(settings) as fresh:
                env = {
                    "COLLAB_ROUTER": f"http://127.0.0.1:{fresh.port}",
                    "COLLAB_ADMIN_TOKEN": TOKEN,
                }
                rows = json_lines(await collab("workers", "--json", env=env))
                assert {r["id"]: r["state"] for r in rows} == {"w-0": "draining", "w-1": "active"}
                assert set(fresh.membership.ring) == {"w-1"}
                async with JsonClient.connect(f"ws://127.0.0.1:{fresh.port}") as j:
                    s = sessions_owned_by("w-0", ["w-0", "w-1"], 1, "after-restart")[0]
                    assert (await j.join(s, "u"))["containerId"] == "w-1"


@pytest.mark.s3
class TestDrainTimeout:
    async def test_a_session_that_cannot_be_made_durable_fails_the_wait_and_is_listed(
        self, tmp_path: Path
    ) -> None:
        # Storage is cut with a proxy (the S3 server runs on, with what it stored): what was
        # acknowledged before the cut is stored and must stay so.
        with start_s3_server() as s3:
            async with s3_behind_proxy(s3.store_kwargs("drain-timeout")) as (env, cut):
                async with pool(tmp_path, 1, env) as p, JsonClient.connect(p.url) as j:
                    await j.join("stuck", "alice")
                    await j.file_op(type="create", path="a.txt", content="stored before the cut")
                    await cut.cut("refuse")
                    # Held in memory and not acknowledged: acknowledged means stored.
                    await j.send_op(type="update", path="a.txt", content="edited while down")
                    done = await cli(p, "drain", "w-0", "--wait", "--timeout", "3")
                    assert done.returncode == 1
                    assert "w-0 still holds 1 session(s) after 3 s: stuck" in done.stderr
                    status = await cli(p, "status")
                    assert status.returncode == 1
                    assert "storage  UNAVAILABLE on w-0" in status.stdout
                    assert "1 sessions left to move" in status.stdout
                    await cut.heal()
                    again = await cli(p, "drain", "w-0", "--wait", "--timeout", "30")
                    assert again.returncode == 0, again.stderr
                async with pool(tmp_path, 1, env) as p2, JsonClient.connect(p2.url) as j2:
                    await j2.join("stuck", "bob")
                    assert await j2.get_file("a.txt") == "edited while down"


class TestCommit:
    async def test_commit_now_on_the_live_worker_and_on_a_session_that_is_not_live(
        self, tmp_path: Path
    ) -> None:
        repo = tmp_path / "repo"
        make_repo(repo)
        storage = tmp_path / "storage"
        imported = await collab("import", "git-s", str(repo), env={"STORAGE_DIR": str(storage)})
        assert imported.returncode == 0, imported.stderr
        async with pool(tmp_path, 2, {"STORAGE_DIR": str(storage)}) as p:
            async with JsonClient.connect(p.url) as j:
                await j.join("git-s", "alice")
                await j.file_op(type="update", path="README.md", content="# changed\n")
                done = await cli(p, "commit", "git-s", "--json")
                row = json_lines(done)[0]
                assert row["result"] == "committed" and row["changed"] == ["README.md"]
                assert row["worker"] == p.owner("git-s") and len(row["commit"]) == 40
                table = await cli(p, "commit", "git-s")
                assert header(table)[:3] == ["SESSION", "WORKER", "RESULT"]
                assert "nothing changed" in table.stdout
                screen = await cli(p, "status")
                assert "last commits" in screen.stdout and row["commit"][:10] in screen.stdout
            # Not live anywhere now (its worker is told to hand it off): the owner loads it.
            owner = p.workers[p.owner("git-s") or ""]
            async with httpx.AsyncClient() as http:
                await http.post(
                    owner.http + "/admin/sessions/git-s/handoff",
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
            cold = json_lines(await cli(p, "commit", "git-s", "--json"))[0]
            assert cold["result"] == "nothing changed"
            plain = await cli(p, "commit", "not-git")
            async with JsonClient.connect(p.url) as j:
                await j.join("not-git", "bob")
                plain = await cli(p, "commit", "not-git")
            assert plain.returncode == 1 and "has no git history" in plain.stderr
