"""Read-only tokens (claim ``readonly``): they see everything and change nothing.

y-websocket has no way to be told "your update was refused" short of a close, after which the
provider would reconnect forever; so a read-only provider's updates are dropped (and counted),
it keeps receiving everyone else's, and an editor is expected to be read-only (ours is).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support import JsonClient, YjsClient, run_worker, settings_for
from tests.tokens import SECRET, mint
from worker.settings import Settings, StorageSettings


def settings(tmp_path: Path) -> Settings:
    return settings_for(StorageSettings(storage_dir=tmp_path / "storage"), auth_secret=SECRET)


class TestReadOnly:
    async def test_a_read_only_json_client_reads_and_every_write_is_refused(
        self, tmp_path: Path
    ) -> None:
        async with run_worker(settings(tmp_path)) as worker:
            writer = mint(sub="alice", sessions=["s-ro"])
            reader = mint(sub="bob", sessions=["s-ro"], readonly=["s-ro"])
            async with JsonClient.connect(worker.url, f"/?token={writer}") as w:
                await w.join("s-ro", "alice")
                await w.file_op(type="create", path="a.txt", content="kept")
            async with JsonClient.connect(worker.url, f"/?token={reader}") as r:
                await r.join("s-ro", "bob")
                assert await r.get_file("a.txt") == "kept"
                refused = await r.file_op(type="update", path="a.txt", content="changed")
                assert refused["error"] == "Access denied" and "read-only" in refused["reason"]
                await r.send({"type": "yjsUpdate", "data": {"docId": "a.txt", "update": [0, 0]}})
                assert (await r.recv("error"))["error"] == "Access denied"
                assert await r.get_file("a.txt") == "kept"

    async def test_a_read_only_editor_sees_changes_and_its_own_are_dropped(
        self, tmp_path: Path
    ) -> None:
        async with run_worker(settings(tmp_path)) as worker:
            writer = mint(sub="alice", sessions=["s-ro"])
            reader = mint(sub="bob", sessions=["s-ro"], readonly=True)
            async with (
                YjsClient.connect(worker.url, f"s-ro/a.txt?token={writer}") as w,
                YjsClient.connect(worker.url, f"s-ro/a.txt?token={reader}") as r,
            ):
                await asyncio.gather(w.synced.wait(), r.synced.wait())
                await w.insert(0, "from the writer")
                await r.wait_text("from the writer")
                await r.insert(0, "IGNORED ")
                await w.insert(len(str(w.text)), ".")
                await r.wait_text("IGNORED from the writer.")  # its own copy, and the new dot
                await w.wait_text("from the writer.")
                assert "IGNORED" not in str(worker.manager.sessions["s-ro"].text("a.txt"))
                dropped = worker.app.state.metrics.value(
                    "collab_protocol_errors_total", reason="read_only"
                )
                assert dropped >= 1
                assert r.close_code is None  # still connected, still receiving
