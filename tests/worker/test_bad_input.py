"""Hostile and broken input: a clear refusal, nothing crashes, stored state unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets

from tests.support import JsonClient, RunningWorker, YjsClient, run_worker, settings_for, wait_until
from worker import yjs_protocol as yjs
from worker.settings import StorageSettings


def stored_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


async def settled(worker: RunningWorker) -> None:
    """Waits until the worker holds nothing unflushed, so storage reflects every edit so far."""
    await wait_until(
        lambda: all(not s.outbox.dirty for s in worker.manager.sessions.values()), what="flushed"
    )


class TestCorruptYjsUpdates:
    async def test_over_yjs_closes_that_client_and_keeps_the_room_serving(
        self, worker: RunningWorker
    ) -> None:
        async with (
            YjsClient.connect(worker.url, "s-corrupt/a.txt") as good,
            YjsClient.connect(worker.url, "s-corrupt/a.txt") as bad,
        ):
            await asyncio.gather(good.synced.wait(), bad.synced.wait())
            await good.insert(0, "intact")
            await bad.wait_text("intact")
            await settled(worker)
            before = stored_files(worker.settings.storage.storage_dir)
            await bad.ws.send(yjs.update_message(b"\x01\x02\x03garbage"))
            await wait_until(lambda: bad.close_code is not None, what="bad client closed")
            assert bad.close_code == 1007
            assert "rejected" in bad.close_reason
            await good.insert(6, "!")
            async with YjsClient.connect(worker.url, "s-corrupt/a.txt") as late:
                await late.wait_text("intact!")
            await settled(worker)
            after = stored_files(worker.settings.storage.storage_dir)
            assert set(before) <= set(after)
            assert all(after[k] == v for k, v in before.items())

    @pytest.mark.parametrize(
        "frame",
        [
            b"",
            b"\x00",
            b"\x00\x02",
            b"\x00\x02\x05ab",
            b"\x00\x07\x00",
            b"\x09\x00",
            b"\x00\x02\x00trailing",
            b"\x01\x03\x01\x01\x01",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ],
    )
    async def test_malformed_frames_are_refused(self, worker: RunningWorker, frame: bytes) -> None:
        async with (
            YjsClient.connect(worker.url, "s-frames/a.txt") as bad,
            YjsClient.connect(worker.url, "s-frames/a.txt") as good,
        ):
            await asyncio.gather(bad.synced.wait(), good.synced.wait())
            await bad.ws.send(frame)
            await wait_until(lambda: bad.close_code is not None, what="bad client closed")
            assert bad.close_code == 1007
            await good.insert(0, "still fine")
            await good.wait_text("still fine")

    async def test_over_json_answers_an_error_and_changes_nothing(
        self, worker: RunningWorker
    ) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-corrupt-json", "mallory")
            await c.file_op(type="create", path="a.txt", content="intact")
            for update in ([1, 2, 3, 250], [300], "not-a-list", [-1], [0.5]):
                reply = await c.request(
                    {"type": "yjsUpdate", "data": {"docId": "a.txt", "update": update}}, "error"
                )
                assert reply["error"] == "Failed to apply update"
            assert await c.get_file("a.txt") == "intact"

    async def test_text_frames_on_the_yjs_endpoint_are_refused(self, worker: RunningWorker) -> None:
        async with YjsClient.connect(worker.url, "s-text/a.txt") as c:
            await c.ws.send("hello")
            await wait_until(lambda: c.close_code is not None, what="closed")
        assert c.close_code == 1003


class TestTargets:
    @pytest.mark.parametrize(
        "room",
        [
            "..%2F..%2Fetc/a.txt",
            "s/.git/config",
            "s/.collaboration/x",
            "bad..id/a.txt",
            "s/a/../../b",
            "s/%00x",
        ],
    )
    async def test_invalid_session_or_path_is_closed_with_1008(
        self, worker: RunningWorker, room: str
    ) -> None:
        async with websockets.connect(f"{worker.url}/yjs/{room}") as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert not worker.manager.sessions


class TestOversizeFrames:
    async def test_are_closed_with_1009_on_both_protocols(self, tmp_path: Path) -> None:
        settings = settings_for(
            StorageSettings(storage_dir=tmp_path / "s"), max_message_bytes=64 * 1024
        )
        async with run_worker(settings) as worker:
            async with YjsClient.connect(worker.url, "s-big/a.txt") as y:
                await asyncio.wait_for(y.synced.wait(), 5)
                await y.ws.send(b"\x00\x02" + b"x" * 70_000)
                await wait_until(lambda: y.close_code is not None, what="closed")
                assert y.close_code == 1009
            async with JsonClient.connect(worker.url) as j:
                await j.join("s-big", "u")
                await j.send(
                    {
                        "type": "fileOperation",
                        "data": {"type": "create", "path": "a.txt", "content": "x" * 70_000},
                    }
                )
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await j.recv(timeout=5)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            async with JsonClient.connect(worker.url) as j:
                await j.join("s-big", "u")
                assert await j.get_files() == []
