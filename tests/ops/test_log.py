"""`collab log`: the operations log in order across workers and segments, table or JSON."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.cli import COLLAB, Done, collab_sync
from tests.conftest import storage_env
from worker.settings import StorageSettings
from worker.storage import SessionStore, store_for


async def write_log(env: dict[str, str]) -> None:
    store = store_for(StorageSettings.from_env(env))
    try:
        one, two = SessionStore(store, "w-1"), SessionStore(store, "w-2")
        await one.append_log(
            "s",
            [
                {
                    "op": "create",
                    "userId": "alice",
                    "path": "a.py",
                    "bytes": 3,
                    "ts": "2026-01-01T00:00:02Z",
                }
            ],
        )
        await two.append_log(
            "s",
            [
                {
                    "op": "edit",
                    "userId": "bob",
                    "path": "a.py",
                    "bytes": 9,
                    "ts": "2026-01-01T00:00:01Z",
                },
                {"op": "delete", "userId": "bob", "path": "b.py", "ts": "2026-01-01T00:00:03Z"},
            ],
        )
    finally:
        await store.aclose()


def collab(env: dict[str, str], *args: str) -> Done:
    return collab_sync(*args, env=env, timeout=60)


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_entries_of_every_worker_print_in_time_order(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = storage_env(backend, tmp_path, request)
    await write_log(env)
    done = await asyncio.to_thread(collab, env, "log", "s", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["op"], r["userId"], r["worker"]) for r in rows] == [
        ("edit", "bob", "w-2"),
        ("create", "alice", "w-1"),
        ("delete", "bob", "w-2"),
    ]
    table = await asyncio.to_thread(collab, env, "log", "s")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "USER", "WORKER", "OP", "PATH", "BYTES"]
    assert lines[1].split() == ["2026-01-01T00:00:01Z", "bob", "w-2", "edit", "a.py", "9"]
    assert len(lines) == 4


async def test_follow_prints_new_entries_as_they_land(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = storage_env("local", tmp_path, request)
    await write_log(env)
    proc = await asyncio.create_subprocess_exec(
        str(COLLAB),
        "log",
        "s",
        "--json",
        "--follow",
        "--interval",
        "0.1",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        for _ in range(3):
            await asyncio.wait_for(proc.stdout.readline(), 10)
        store = store_for(StorageSettings.from_env(env))
        await SessionStore(store, "w-3").append_log("s", [{"op": "rename", "path": "c.py"}])
        await store.aclose()
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert (line["op"], line["worker"]) == ("rename", "w-3")
    finally:
        proc.kill()
        await proc.wait()


async def test_unknown_and_hostile_sessions_are_clear_errors(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = storage_env("local", tmp_path, request)
    missing = await asyncio.to_thread(collab, env, "log", "nope")
    assert missing.returncode == 1 and "no session 'nope' in storage" in missing.stderr
    hostile = await asyncio.to_thread(collab, env, "log", "../etc")
    assert hostile.returncode == 2 and "invalid session id" in hostile.stderr
