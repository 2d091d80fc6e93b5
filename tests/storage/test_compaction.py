"""Compaction: what a snapshot holds, and that nothing the ownership design allows loses data.

Every test runs on each backend (the embedded store and SeaweedFS S3, as the storage contract
does): a concurrent flush, a second worker writing or compacting the same session at any step of
a compaction, and a compacting process killed with SIGKILL at random moments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pycrdt import Doc, Map, Text, get_state, merge_updates

from tests.s3server import BACKENDS, S3Server, minio_test_kwargs
from tests.storage.test_session_store import HookedStore, text_update
from tests.support import ROOT
from worker.storage import SessionStore, Store, decode_segment, open_store


def typing_history(count: int, seed: int = 3) -> tuple[list[bytes], str]:
    """``count`` one-keystroke updates of one text, a quarter of them deletions, and the text."""
    rng = random.Random(seed)
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))  # each keystroke's own update
    length = 0
    for _ in range(count):
        if length > 8 and rng.random() < 0.25:
            at = rng.randrange(length - 1)
            del text[at : at + 1]
            length -= 1
        else:
            at = length if rng.random() < 0.8 else rng.randrange(length + 1)
            text.insert(at, rng.choice("abc d\n"))
            length += 1
    return updates, str(text)


def text_of(update: bytes) -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get("content", type=Text))


def tokens_of(update: bytes) -> set[int]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return {int(v) for v in doc.get("tokens", type=Map).values()}


@pytest.fixture(params=BACKENDS)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """``open_store`` arguments for a fresh store (a child process opens the same one)."""
    bucket = f"compact-{uuid.uuid4().hex[:16]}"
    if request.param == "local":
        return {"storage_dir": str(tmp_path / "store")}
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return server.store_kwargs(bucket)
    return minio_test_kwargs(bucket)


@pytest.fixture
async def store(store_config: dict[str, Any]) -> AsyncIterator[Store]:
    s = open_store(**store_config)
    try:
        yield s
    finally:
        await s.aclose()


async def write_history(sessions: SessionStore, session: str, updates: list[bytes]) -> None:
    """``updates`` as segments of 100 keystrokes each (a flush interval's worth of typing)."""
    for i in range(0, len(updates), 100):
        await sessions.append_updates(session, [("a", u) for u in updates[i : i + 100]])


class TestSnapshotEncoding:
    async def test_a_snapshot_is_the_merge_without_deleted_content(self, store: Store) -> None:
        """Same text and state vector as merging every update, in fewer bytes."""
        updates, expected = typing_history(3000)
        sessions = SessionStore(store, "w1")
        await write_history(sessions, "s1", updates)
        result = await sessions.compact("s1")
        assert result.snapshot_key is not None
        snapshot = dict(decode_segment(await store.get(result.snapshot_key) or b""))["a"]
        merged = merge_updates(*updates)
        assert text_of(snapshot) == expected == text_of(merged)
        assert get_state(snapshot) == get_state(merged)
        assert len(snapshot) < 0.8 * len(merged), (len(snapshot), len(merged))
        assert result.snapshot_bytes == len(await store.get(result.snapshot_key) or b"")
        assert text_of((await sessions.load("s1")).docs["a"]) == expected

    async def test_a_deletion_of_content_not_yet_seen_survives(self, store: Store) -> None:
        """A segment that deletes text from a segment the compactor did not list (another
        writer's, stored later) still deletes it once that segment arrives."""
        doc: Doc[Any] = Doc()
        text = doc.get("content", type=Text)
        steps = []
        for edit in (
            lambda: text.insert(0, "hello"),
            lambda: text.insert(5, " world"),
            lambda: text.__delitem__(slice(6, 9)),
            lambda: text.insert(0, "X"),
        ):
            before = doc.get_state()
            edit()
            steps.append(doc.get_update(before))
        sessions = SessionStore(store, "w1")
        for step in (steps[0], steps[2], steps[3]):  # " world" is not in storage yet
            await sessions.append_updates("s1", [("a", step)])
        assert (await sessions.compact("s1")).snapshot_key is not None
        await sessions.append_updates("s1", [("a", steps[1])])
        assert text_of((await sessions.load("s1")).docs["a"]) == str(text) == "Xhello ld"

    async def test_a_large_doc_loads_in_snapshot_form_with_nothing_missing(
        self, store: Store
    ) -> None:
        """A load of a large doc from many segments returns the compact form, with the merge's
        text and state vector, and a deletion whose target is not stored yet still applies."""
        updates, _ = typing_history(8000)
        doc: Doc[Any] = Doc()
        text = doc.get("content", type=Text)
        steps = []
        for edit in (lambda: text.insert(0, "hello"), lambda: text.insert(5, " world")):
            before = doc.get_state()
            edit()
            steps.append(doc.get_update(before))
        before = doc.get_state()
        del text[6:9]
        steps.append(doc.get_update(before))
        sessions = SessionStore(store, "w1")
        await write_history(sessions, "s1", [*updates, steps[0], steps[2]])
        loaded = (await sessions.load("s1")).docs["a"]
        merged = merge_updates(*updates, steps[0], steps[2])
        assert len(loaded) < len(merged) and len(merged) > 64 * 1024
        assert get_state(loaded) == get_state(merged) and text_of(loaded) == text_of(merged)
        late: Doc[Any] = Doc()
        late.apply_update(loaded)
        late.apply_update(steps[1])
        check: Doc[Any] = Doc()
        for update in [*updates, *steps]:
            check.apply_update(update)
        assert str(late.get("content", type=Text)) == str(check.get("content", type=Text))

    async def test_an_update_waiting_for_its_dependency_survives(self, store: Store) -> None:
        """An update whose predecessor is missing is kept (pending) and applies later."""
        doc: Doc[Any] = Doc()
        steps = [text_update(word, doc) for word in ("one ", "two ", "three")]
        sessions = SessionStore(store, "w1")
        await sessions.append_updates("s1", [("a", steps[0]), ("a", steps[2])])
        assert (await sessions.compact("s1")).snapshot_key is not None
        await sessions.append_updates("s1", [("a", steps[1])])
        assert text_of((await sessions.load("s1")).docs["a"]) == "one two three"


Hook = Callable[[], Awaitable[None]]


class TestConcurrentCompaction:
    @pytest.mark.parametrize(
        "op,match",
        [
            ("list", "/updates/"),
            ("list", "/snapshots/"),
            ("get", "/"),
            ("put", "/snapshots/"),
            ("delete", "/"),
        ],
    )
    @pytest.mark.parametrize("other", ["writes", "compacts", "writes_and_compacts"])
    async def test_another_worker_at_any_step_loses_nothing(
        self, store: Store, op: str, match: str, other: str
    ) -> None:
        """A takeover mid-compaction: another worker's writes and compactions of the same
        session, run at any step of ours, lose nothing of either."""
        updates, expected = typing_history(400)
        mine = SessionStore(store, "w1")
        await write_history(mine, "s1", updates)
        await mine.append_updates("s1", [("tokens", token(0))])
        theirs = SessionStore(store, "w2")

        async def other_worker() -> None:
            if other != "compacts":
                await theirs.append_updates("s1", [("tokens", token(1))])
            if other != "writes":
                await theirs.compact("s1")

        hooked = HookedStore(store, op, match, other_worker)
        await SessionStore(hooked, "w1").compact("s1")
        assert hooked.fired
        for reader in (mine, theirs):
            loaded = await reader.load("s1")
            assert text_of(loaded.docs["a"]) == expected
            assert tokens_of(loaded.docs["tokens"]) == ({0} if other == "compacts" else {0, 1})
        await theirs.compact("s1")
        assert len(await store.list("sessions/s1/")) == 1
        assert text_of((await mine.load("s1")).docs["a"]) == expected

    async def test_flushes_during_compactions_lose_nothing(self, store: Store) -> None:
        """A live session's flushes go on while compactions run (no lock between them)."""
        sessions = SessionStore(store, "w1")
        written: list[int] = []

        async def flush_many() -> None:
            for i in range(40):
                await sessions.append_updates("s1", [("tokens", token(i))])
                written.append(i)

        async def compact_many() -> None:
            while len(written) < 40:
                await sessions.compact("s1")
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush_many)
            tg.start_soon(compact_many)
        assert tokens_of((await sessions.load("s1")).docs["tokens"]) == set(range(40))


def token(index: int) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("tokens", type=Map)[f"t{index}"] = index
    return doc.get_update()


class TestKilledCompactor:
    async def test_sigkill_at_random_moments_loses_nothing(
        self, store: Store, store_config: dict[str, Any]
    ) -> None:
        """A process writing and compacting, killed with SIGKILL at random moments, leaves a
        session that loads with everything it acknowledged and everything written before."""
        updates, expected = typing_history(2000)
        sessions = SessionStore(store, "parent")
        await write_history(sessions, "s1", updates)
        rng = random.Random(int(os.environ.get("COMPACT_KILL_SEED", "21")))
        acked: set[int] = set()
        for round_ in range(6):
            config = {
                "store": store_config,
                "session": "s1",
                "worker": f"child{round_}",
                "first": round_ * 100_000,
            }
            acked |= await run_and_kill(config, rng.uniform(0.05, 0.8))
            loaded = await sessions.load("s1")
            assert text_of(loaded.docs["a"]) == expected
            assert acked <= tokens_of(loaded.docs["tokens"])
        assert acked, "the child never acknowledged a write"
        await sessions.compact("s1")
        loaded = await sessions.load("s1")
        assert len(loaded.keys) == 1 and text_of(loaded.docs["a"]) == expected
        assert acked <= tokens_of(loaded.docs["tokens"])


async def run_and_kill(config: dict[str, Any], after_s: float) -> set[int]:
    """Start the child, SIGKILL it ``after_s`` seconds after it is ready; what it acked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.compactor_child", json.dumps(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    with process.stdout as stdout:
        try:
            with anyio.fail_after(30):
                line = await anyio.to_thread.run_sync(stdout.readline)
            assert line.strip() == b"ready", line
            await anyio.sleep(after_s)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        out = stdout.read().decode()
    return {int(line.split()[1]) for line in out.splitlines() if line.startswith("acked ")}
