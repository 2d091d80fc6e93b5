"""When a live worker compacts: by size while edited, on unload, drain and hand-off; what it
reports of its stored bytes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from tests.support import RunningWorker, YjsClient, run_worker, settings_for, wait_until
from worker.settings import StorageSettings
from worker.storage import LocalStore, SessionStore


def sizes(root: Path, session: str) -> dict[str, int]:
    """Bytes of the session's finished objects by kind (the local store's files)."""
    out = {"updates": 0, "snapshots": 0, "log": 0}
    base = root / "sessions" / session
    for kind in out:
        for path in (base / kind).glob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                out[kind] += path.stat().st_size
    return out


def count(root: Path, session: str, kind: str) -> int:
    return len([p for p in (root / "sessions" / session / kind).glob("*") if p.is_file()])


async def type_with_deletions(y: YjsClient, keystrokes: int, seed: int = 5) -> None:
    """One keystroke per update, like an editor; every fourth one deletes a character."""
    rng = random.Random(seed)
    for i in range(keystrokes):
        length = len(y.text)
        if length > 4 and i % 4 == 3:
            at = rng.randrange(length)
            await y.edit(lambda t, at=at: t.__delitem__(slice(at, at + 1)))
        else:
            await y.insert(length, rng.choice("abcdef gh\n"))
        if i % 50 == 49:
            await asyncio.sleep(0.02)  # a few flush intervals over the whole run


def gauge(worker: RunningWorker, kind: str) -> float:
    return float(worker.app.state.metrics.value("collab_stored_bytes", kind=kind))


class TestCompactionBySize:
    async def test_a_live_session_compacts_once_its_segments_outweigh_its_snapshot(
        self, tmp_path: Path
    ) -> None:
        """Stored bytes stay within (1 + ratio) of the snapshot plus one flush, however long
        the history, with no unload; the metrics match the store's own sizes."""
        storage = tmp_path / "storage"
        settings = settings_for(
            StorageSettings(storage_dir=storage),
            flush_interval_ms=20,
            compact_min_segment_bytes=4096,
        )
        async with run_worker(settings) as worker:
            async with YjsClient.connect(worker.url, "s-big/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                await type_with_deletions(y, 3000)
                expected = str(y.text)
                await wait_until(
                    lambda: not worker.manager.sessions["s-big"].outbox.dirty, what="flushed"
                )
                await wait_until(
                    lambda: not worker.manager.flusher._state["s-big"].compacting,
                    what="compaction over",
                )
                stored = sizes(storage, "s-big")
                assert count(storage, "s-big", "snapshots") >= 1, stored
                floor = max(4096, stored["snapshots"])
                assert stored["updates"] <= floor + 4096, stored
                await wait_until(
                    lambda: all(gauge(worker, k) == v for k, v in sizes(storage, "s-big").items()),
                    what=f"gauges {sizes(storage, 's-big')}",
                )
                written = worker.app.state.metrics.value(
                    "collab_stored_bytes_written_total", kind="snapshots"
                )
                assert written >= stored["snapshots"] > 0
        loaded = await SessionStore(LocalStore(storage), "reader").load("s-big")
        doc_text = _text(loaded.docs["a.txt"])
        assert doc_text == expected

    async def test_a_small_session_does_not_compact_on_every_flush(self, tmp_path: Path) -> None:
        """Below COMPACT_MIN_SEGMENT_BYTES a live session keeps its segments."""
        storage = tmp_path / "storage"
        settings = settings_for(StorageSettings(storage_dir=storage), flush_interval_ms=20)
        async with run_worker(settings) as worker:
            async with YjsClient.connect(worker.url, "s-small/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                for word in ("one ", "two ", "three "):
                    await y.insert(len(y.text), word)
                    await asyncio.sleep(0.1)
                await wait_until(
                    lambda: not worker.manager.sessions["s-small"].outbox.dirty, what="flushed"
                )
                assert count(storage, "s-small", "updates") >= 2
                assert count(storage, "s-small", "snapshots") == 0


class TestCompactionOnDeparture:
    async def test_a_session_loaded_from_many_objects_is_compacted_when_idle(
        self, tmp_path: Path
    ) -> None:
        """Segments another worker left (a SIGKILL) are folded on unload, even unedited."""
        storage = tmp_path / "storage"
        writer = SessionStore(LocalStore(storage), "w-dead")
        doc: Doc = Doc()
        for word in ("one ", "two ", "three "):
            before = doc.get_state()
            doc.get("content", type=Text).insert(len(doc.get("content", type=Text)), word)
            await writer.append_updates("s-left", [("a.txt", doc.get_update(before))])
        settings = settings_for(StorageSettings(storage_dir=storage), session_idle_ms=200)
        async with run_worker(settings) as worker:
            async with YjsClient.connect(worker.url, "s-left/a.txt") as y:
                await y.wait_text("one two three ")
            await wait_until(lambda: "s-left" not in worker.manager.sessions, what="unload")
        assert count(storage, "s-left", "updates") == 0
        assert count(storage, "s-left", "snapshots") == 1

    @pytest.mark.parametrize("departure", ["drain", "hand-off"])
    async def test_a_drain_or_hand_off_leaves_the_session_as_one_snapshot(
        self, tmp_path: Path, departure: str
    ) -> None:
        """Compacted once its clients are sent away and it is gone from here (worker.departure
        says why not before): one snapshot with every edit, and nothing left in the gauges."""
        storage = tmp_path / "storage"
        settings = settings_for(StorageSettings(storage_dir=storage))
        async with run_worker(settings) as worker:
            async with YjsClient.connect(worker.url, "s-away/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                for word in ("one ", "two ", "three "):
                    await y.insert(len(y.text), word)
                    await asyncio.sleep(0.15)
                assert count(storage, "s-away", "updates") >= 2
                if departure == "drain":
                    assert (await worker.manager.handoff.drain(5))["notDurable"] == []
                else:
                    answer = await worker.manager.handoff.hand_off("s-away", 5)
                    assert answer["durable"] is True
                await wait_until(lambda: y.close_code is not None, what="1012")
            assert count(storage, "s-away", "updates") == 0
            assert count(storage, "s-away", "snapshots") == 1
            assert gauge(worker, "updates") == gauge(worker, "snapshots") == 0, "forgotten"
        loaded = await SessionStore(LocalStore(storage), "reader").load("s-away")
        assert _text(loaded.docs["a.txt"]) == "one two three "


def _text(update: bytes) -> str:
    doc: Doc = Doc()
    doc.apply_update(update)
    return str(doc.get("content", type=Text))
