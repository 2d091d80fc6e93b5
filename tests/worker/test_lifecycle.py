"""Session lifecycle: load on first client, group-commit, idle unload, SIGTERM drain, restart."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.support import (
    JsonClient,
    RunningWorker,
    WorkerProcess,
    YjsClient,
    run_worker,
    settings_for,
    wait_until,
)
from worker.departure import IDLE
from worker.settings import StorageSettings
from worker.storage import LocalStore, SessionStore


def segment_keys(root: Path, session: str) -> list[str]:
    """The session's finished objects (not the local store's temporary files mid-write)."""
    base = root / "sessions" / session
    return sorted(
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and not p.name.startswith(".tmp-")
    )


class TestStores:
    async def test_a_store_that_fails_to_close_keeps_no_other_store_open(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each store the worker opened is closed at stop even when closing another fails
        (both fail here, so whichever is closed first fails first); the failure is logged."""
        attempted: list[int] = []

        class FailingToClose(LocalStore):
            def __init__(self, number: int) -> None:
                super().__init__(tmp_path / "storage")
                self.number = number

            async def aclose(self) -> None:
                attempted.append(self.number)
                raise OSError(f"store {self.number}: disk went away")

        opened = iter(range(2))
        settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
        async with run_worker(settings, lambda: FailingToClose(next(opened))) as worker:
            async with JsonClient.connect(worker.url) as c:
                await c.join("s-close", "u")
        assert sorted(attempted) == [0, 1]
        logged = capsys.readouterr().out
        assert logged.count("store_close_failed") == 2 and "worker_stopped" in logged


class TestInProcess:
    async def test_edits_are_group_committed_every_flush_interval(self, tmp_path: Path) -> None:
        storage = tmp_path / "storage"
        # An interval long enough that 30 sends fit in it even on a busy 2-core machine.
        settings = settings_for(StorageSettings(storage_dir=storage), flush_interval_ms=1500)
        async with run_worker(settings) as worker:
            async with YjsClient.connect(worker.url, "s-gc/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                for i in range(30):  # 30 updates inside one interval...
                    await y.insert(0, str(i % 10))
                await wait_until(
                    lambda: any(k.startswith("updates/") for k in segment_keys(storage, "s-gc")),
                    what="a segment",
                )
                # ...become one segment, not thirty.
                assert (
                    len([k for k in segment_keys(storage, "s-gc") if k.startswith("updates/")]) == 1
                )
                loaded = await SessionStore(LocalStore(storage), "reader").load("s-gc")
                assert "a.txt" in loaded.docs

    async def test_an_idle_session_is_flushed_compacted_and_unloaded(self, tmp_path: Path) -> None:
        storage = tmp_path / "storage"
        settings = settings_for(StorageSettings(storage_dir=storage), session_idle_ms=300)
        async with run_worker(settings) as worker:
            async with JsonClient.connect(worker.url) as c:
                await c.join("s-idle", "alice")
                await c.file_op(type="create", path="a.txt", content="kept")
                assert "s-idle" in worker.manager.sessions
            await wait_until(
                lambda: "s-idle" not in worker.manager.sessions, timeout=5, what="unload"
            )
            keys = segment_keys(storage, "s-idle")
            assert [k for k in keys if k.startswith("snapshots/")], keys
            assert not [k for k in keys if k.startswith("updates/")], keys
            assert "meta.json" in keys
            async with JsonClient.connect(worker.url) as c:
                await c.join("s-idle", "bob")
                assert await c.get_file("a.txt") == "kept"

    async def test_a_session_with_a_client_is_not_unloaded(self, tmp_path: Path) -> None:
        settings = settings_for(StorageSettings(storage_dir=tmp_path / "s"), session_idle_ms=100)
        async with run_worker(settings) as worker, JsonClient.connect(worker.url) as c:
            await c.join("s-stay", "alice")
            await asyncio.sleep(0.6)  # six idle timeouts pass: proves it is never unloaded
            assert "s-stay" in worker.manager.sessions


class TestSigterm:
    async def test_flushes_closes_clients_with_1012_exits_and_restart_shows_every_edit(
        self, tmp_path: Path
    ) -> None:
        env = {
            "STORAGE_DIR": str(tmp_path / "storage"),
            "WORKER_ID": "w-sig",
            # a long interval: only the drain can have written these edits
            "FLUSH_INTERVAL_MS": "60000",
        }
        proc = WorkerProcess(env, log=tmp_path / "worker.log")
        await proc.start()
        try:
            async with (
                YjsClient.connect(proc.url, "s-sig/a.txt") as y,
                JsonClient.connect(proc.url) as j,
            ):
                await asyncio.wait_for(y.synced.wait(), 5)
                await j.join("s-sig", "alice")
                await j.file_op(type="create", path="b.txt", content="from json")
                for word in ("one ", "two ", "three "):
                    await y.insert(len(str(y.text)), word)
                await j.recv("yjsUpdate")
                proc.signal(signal.SIGTERM)
                assert await proc.wait() == 0
                await wait_until(lambda: y.close_code is not None, what="close")
                assert y.close_code == 1012
            restarted = WorkerProcess(env, port=proc.port, log=tmp_path / "worker.log")
            await restarted.start()
            try:
                async with JsonClient.connect(restarted.url) as j:
                    await j.join("s-sig", "bob")
                    assert await j.get_file("a.txt") == "one two three "
                    assert await j.get_file("b.txt") == "from json"
            finally:
                assert await restarted.stop() == 0
        finally:
            proc.kill()

    async def test_readiness_turns_503_while_draining(self, tmp_path: Path) -> None:
        settings = settings_for(StorageSettings(storage_dir=tmp_path / "s"), admin_token="t0ken")
        async with run_worker(settings) as worker, httpx.AsyncClient() as http:
            assert (await http.get(f"{worker.http}/readyz")).status_code == 200
            r = await http.post(
                f"{worker.http}/admin/drain", headers={"Authorization": "Bearer t0ken"}
            )
            assert r.status_code == 202 and r.json()["draining"] is True
            ready = await http.get(f"{worker.http}/readyz")
            assert ready.status_code == 503 and ready.json()["state"] == "draining"
            async with JsonClient.connect(worker.url) as c:
                reply = await c.request({"type": "join", "sessionId": "s", "userId": "u"}, "error")
                assert "draining" in reply["reason"]
            await http.post(
                f"{worker.http}/admin/undrain", headers={"Authorization": "Bearer t0ken"}
            )
            assert (await http.get(f"{worker.http}/readyz")).status_code == 200


class TestBadConfiguration:
    async def test_stops_the_worker_at_start_with_one_line_naming_the_variable(
        self, tmp_path: Path
    ) -> None:
        import subprocess
        import sys

        for env, variable in (
            ({"PORT": "abc"}, "PORT"),
            ({"FLUSH_INTERVAL_MS": "-5"}, "FLUSH_INTERVAL_MS"),
            ({"MINIO_ENDPOINT": "minio"}, "MINIO_ACCESS_KEY"),
            ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
            ({"WORKER_ID": "a b"}, "WORKER_ID"),
        ):
            result = subprocess.run(
                [sys.executable, "-m", "ops.cli", "worker"],
                capture_output=True,
                text=True,
                env={"PATH": "/usr/bin:/bin", "STORAGE_DIR": str(tmp_path), **env},
                timeout=30,
            )
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and variable in lines[0], result.stderr


async def test_worker_metrics_and_health(worker: RunningWorker) -> None:
    names = [
        "collab_sessions_active",
        "collab_connections_active",
        "collab_documents_loaded",
        "collab_updates_received_total",
        "collab_update_bytes_total",
        "collab_messages_sent_total",
        "collab_flush_seconds",
        "collab_flush_errors_total",
        "collab_storage_requests_total",
        "collab_session_load_seconds",
        "collab_commits_total",
        "collab_worker_draining",
        "collab_event_loop_lag_seconds",
        "collab_unflushed_bytes",
        "collab_unflushed_age_seconds",
    ]
    async with JsonClient.connect(worker.url) as c, httpx.AsyncClient() as http:
        await c.join("s-metrics", "alice")
        await c.file_op(type="create", path="a.txt", content="x")
        await wait_until(
            lambda: not worker.manager.sessions["s-metrics"].outbox.dirty, what="flush"
        )
        health = await http.get(f"{worker.http}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        text = (await http.get(f"{worker.http}/metrics")).text
    for name in names:
        assert f"\n{name}" in text or text.startswith(name) or f"# TYPE {name} " in text, name
    assert 'collab_connections_active{protocol="json"} 1.0' in text
    assert "collab_sessions_active 1.0" in text
    assert 'collab_storage_requests_total{op="put",outcome="ok"}' in text


class TestSigkill:
    async def test_loses_nothing_older_than_the_flush_interval(self, tmp_path: Path) -> None:
        env = {
            "STORAGE_DIR": str(tmp_path / "storage"),
            "WORKER_ID": "w-kill",
            "FLUSH_INTERVAL_MS": "200",
        }
        proc = WorkerProcess(env, log=tmp_path / "worker.log")
        await proc.start()
        try:
            async with (
                YjsClient.connect(proc.url, "s-kill/a.txt") as y,
                JsonClient.connect(proc.url) as j,
            ):
                await asyncio.wait_for(y.synced.wait(), 5)
                await j.join("s-kill", "alice")
                for word in ("old ", "older ", "oldest "):
                    await y.insert(len(str(y.text)), word)
                await j.file_op(type="create", path="b.txt", content="json edit")
                # Time passes on purpose: the claim is that five flush intervals are enough for
                # all of it to be durable, so waiting until it is durable would prove nothing.
                await asyncio.sleep(1.0)
                proc.signal(signal.SIGKILL)
                assert await proc.wait() == -signal.SIGKILL
        finally:
            proc.kill()
        restarted = WorkerProcess(env, log=tmp_path / "worker.log")
        await restarted.start()
        try:
            async with JsonClient.connect(restarted.url) as j:
                await j.join("s-kill", "bob")
                assert await j.get_file("a.txt") == "old older oldest "
                assert await j.get_file("b.txt") == "json edit"
        finally:
            assert await restarted.stop() == 0


class TestOperationsLog:
    async def test_file_operations_go_with_their_group_commit_and_bursts_follow(
        self, tmp_path: Path
    ) -> None:
        storage = tmp_path / "storage"
        # A long log interval: only the file operations themselves can have written the log.
        settings = settings_for(StorageSettings(storage_dir=storage), log_interval_ms=60_000)
        reader = SessionStore(LocalStore(storage), "reader")
        async with run_worker(settings) as worker:
            async with (
                JsonClient.connect(worker.url) as j,
                YjsClient.connect(worker.url, "s-log/b.txt") as y,
            ):
                await j.join("s-log", "alice")
                await asyncio.wait_for(y.synced.wait(), 5)
                await j.file_op(type="create", path="a.txt", content="hello")
                await j.file_op(type="rename", oldPath="a.txt", newPath="c.txt")
                await j.file_op(type="delete", path="c.txt")
                await wait_until(lambda: bool(segment_keys(storage, "s-log")), what="flush")
                await wait_until(
                    lambda: any(k.startswith("log/") for k in segment_keys(storage, "s-log")),
                    what="log segment with the group commit",
                )
                ops = [(e["op"], e["path"], e["userId"]) for e in await reader.read_log("s-log")]
                assert ops[:3] == [
                    ("create", "a.txt", "alice"),
                    ("rename", "c.txt", "alice"),
                    ("delete", "c.txt", "alice"),
                ]
                await y.insert(0, "typed")
            # Unloading writes the open edit burst.
            await worker.manager.leave(worker.manager.sessions["s-log"], IDLE)
        log = await reader.read_log("s-log")
        bursts = [e for e in log if e["op"] == "edit" and e["path"] == "b.txt"]
        assert len(bursts) == 1 and bursts[0]["bytes"] > 0 and bursts[0]["worker"] == "w-test"
        assert all({"ts", "userId", "worker", "op", "path", "bytes"} <= set(e) for e in log)
        assert [e["ts"] for e in log] == sorted(e["ts"] for e in log)
