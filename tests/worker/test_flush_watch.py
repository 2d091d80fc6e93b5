"""The group commit's ticks look only at sessions holding something unwritten, and never miss one.

A real ``Flusher`` over the embedded store; outboxes are filled as a session fills them.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import settings_for
from worker.flusher import Flusher, StorageHealth
from worker.metrics import WorkerMetrics
from worker.settings import StorageSettings
from worker.storage import LocalStore, SessionStore


def flusher(tmp_path: Path) -> tuple[Flusher, SessionStore]:
    settings = settings_for(StorageSettings(storage_dir=tmp_path), flush_interval_ms=100)
    store = SessionStore(LocalStore(tmp_path, fsync=False), "w-test")
    return Flusher(settings, store, WorkerMetrics(), StorageHealth()), store


async def segments(store: SessionStore, session_id: str) -> int:
    return len((await store.load(session_id)).keys)


class TestFlushWatch:
    async def test_only_sessions_with_something_unwritten_are_watched(self, tmp_path: Path) -> None:
        """A thousand idle sessions cost a tick nothing: none of them is looked at."""
        f, _ = flusher(tmp_path)
        outboxes = [f.outbox(f"s-{i}") for i in range(1000)]
        await f.flush_due()
        assert f._pending == set()
        outboxes[7].add_update("a.txt", b"\x00\x00", "alice", time.time())
        assert f._pending == {"s-7"}

    async def test_a_session_edited_after_a_clean_tick_is_written_by_a_later_one(
        self, tmp_path: Path
    ) -> None:
        f, store = flusher(tmp_path)
        outbox = f.outbox("s-1")
        await f.flush_due()
        outbox.add_update("", b"\x00\x00", "alice", time.time() - 1)
        assert f.update_lag_metrics()[0] == 2
        await f.flush_due()
        assert not outbox.dirty and await segments(store, "s-1") == 1
        assert f.update_lag_metrics() == (0, 0.0)
        assert f._pending == set()  # written: no longer watched

    async def test_a_log_burst_alone_is_watched_until_its_interval_writes_it(
        self, tmp_path: Path
    ) -> None:
        f, store = flusher(tmp_path)
        outbox = f.outbox("s-1")
        outbox.note_edit("a.txt", "alice", 3, at=time.time(), worker="w-test")
        await f.flush_due()
        assert outbox.dirty and f._pending == {"s-1"}  # the log interval has not passed
        time.sleep(0.11)
        await f.flush_due()
        assert not outbox.dirty and len(await store.read_log("s-1")) == 1

    async def test_a_file_operation_alone_is_watched_until_the_log_is_due(
        self, tmp_path: Path
    ) -> None:
        f, store = flusher(tmp_path)
        outbox = f.outbox("s-1")
        await f.flush_due()
        outbox.add_entry({"op": "create", "path": "a.txt"})
        assert f._pending == {"s-1"}
        time.sleep(0.11)
        await f.flush_due()
        assert not outbox.dirty and len(await store.read_log("s-1")) == 1

    async def test_a_forgotten_session_is_no_longer_watched(self, tmp_path: Path) -> None:
        f, _ = flusher(tmp_path)
        f.outbox("s-1").add_update("", b"\x00\x00", "alice", time.time())
        f.forget("s-1")
        assert f._pending == set()
        assert f.update_lag_metrics() == (0, 0.0)
