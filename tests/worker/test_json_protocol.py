"""The seed's JSON protocol, message by message, against a real worker."""

from __future__ import annotations

import pytest

from tests.support import JsonClient, RunningWorker


class TestJoin:
    async def test_join_answers_joined_with_the_worker_id(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            reply = await c.join("s-join", "alice")
        assert reply == {
            "type": "joined",
            "sessionId": "s-join",
            "userId": "alice",
            "containerId": worker.settings.worker_id,
        }

    async def test_ws_path_serves_the_same_protocol(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url, "/ws") as c:
            assert (await c.join("s-ws", "alice"))["type"] == "joined"

    async def test_others_hear_user_joined_and_user_left(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as a:
            await a.join("s-presence", "alice")
            async with JsonClient.connect(worker.url) as b:
                await b.join("s-presence", "bob")
                assert await a.recv("userJoined") == {"type": "userJoined", "userId": "bob"}
            assert await a.recv("userLeft") == {"type": "userLeft", "userId": "bob"}

    @pytest.mark.parametrize(
        "message",
        [
            {"type": "join"},
            {"type": "join", "sessionId": "s"},
            {"type": "join", "userId": "u"},
            {"type": "join", "sessionId": "", "userId": "u"},
            {"type": "join", "sessionId": 5, "userId": "u"},
        ],
    )
    async def test_missing_ids_are_refused(self, worker: RunningWorker, message: dict) -> None:
        async with JsonClient.connect(worker.url) as c:
            reply = await c.request(message, "error")
        assert reply["error"] == "Missing sessionId or userId"

    @pytest.mark.parametrize("session", ["../x", "a/b", "x" * 200, ".hidden", "a..b", "s\x00"])
    async def test_invalid_session_ids_are_refused(
        self, worker: RunningWorker, session: str
    ) -> None:
        async with JsonClient.connect(worker.url) as c:
            reply = await c.request({"type": "join", "sessionId": session, "userId": "u"}, "error")
            assert reply["error"] == "Invalid sessionId"
            assert (await c.request({"type": "ping"}, "pong"))["type"] == "pong"
        assert not worker.manager.sessions

    async def test_a_second_join_on_one_connection_is_refused(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-one", "u")
            reply = await c.request({"type": "join", "sessionId": "s-two", "userId": "u"}, "error")
        assert reply["error"] == "Already joined to a session"


class TestMessagesBeforeJoin:
    @pytest.mark.parametrize("kind", ["fileOperation", "yjsUpdate", "getFiles", "getFile"])
    async def test_are_refused_with_not_joined(self, worker: RunningWorker, kind: str) -> None:
        async with JsonClient.connect(worker.url) as c:
            reply = await c.request({"type": kind, "data": {"path": "a.txt"}}, "error")
        assert reply["error"] == "Not joined to a session"

    async def test_ping_needs_no_join(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            assert await c.request({"type": "ping"}, "pong") == {"type": "pong"}


class TestMalformed:
    @pytest.mark.parametrize("raw", ["not json", "{", "[]", "42", '"join"', "{}", '{"type": 7}'])
    async def test_malformed_messages_get_invalid_format(
        self, worker: RunningWorker, raw: str
    ) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.send(raw)
            reply = await c.recv("error")
            assert reply["error"] == "Invalid message format"
            assert await c.request({"type": "ping"}, "pong")  # connection still serves

    async def test_unknown_type_gets_unknown_message_type(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            reply = await c.request({"type": "launchMissiles"}, "error")
        assert reply["error"] == "Unknown message type"

    async def test_file_operation_without_data_is_refused(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-nodata", "u")
            reply = await c.request({"type": "fileOperation"}, "error")
            assert reply["error"] == "Failed to apply file operation"
            reply = await c.request(
                {"type": "fileOperation", "data": {"type": "chmod", "path": "a"}}, "error"
            )
            assert reply["error"] == "Failed to apply file operation"
            assert "unknown file operation" in reply["reason"]


class TestFileOperations:
    async def test_create_then_get_file_and_get_files(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-files", "alice")
            assert (await c.file_op(type="create", path="src/a.py", content="x = 1\n"))[
                "type"
            ] == "fileOperationSuccess"
            await c.file_op(type="create", path="README.md", content="# hi\n")
            assert await c.get_file("src/a.py") == "x = 1\n"
            assert await c.get_files() == ["README.md", "src/a.py"]
            assert await c.get_files("src") == ["src/a.py"]
            assert await c.get_file("missing.txt") is None

    async def test_update_delete_and_rename(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-ops", "alice")
            await c.file_op(type="create", path="a.txt", content="one\n")
            await c.file_op(type="update", path="a.txt", content="one\ntwo\n")
            assert await c.get_file("a.txt") == "one\ntwo\n"
            await c.file_op(type="rename", oldPath="a.txt", newPath="dir/b.txt")
            assert await c.get_files() == ["dir/b.txt"]
            assert await c.get_file("dir/b.txt") == "one\ntwo\n"
            assert await c.get_file("a.txt") is None
            await c.file_op(type="delete", path="dir/b.txt")
            assert await c.get_files() == []
            await c.file_op(type="create", path="dir/b.txt", content="fresh")
            assert await c.get_file("dir/b.txt") == "fresh"

    async def test_others_get_the_operation_broadcast(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as a, JsonClient.connect(worker.url) as b:
            await a.join("s-bcast", "alice")
            await b.join("s-bcast", "bob")
            op = {
                "type": "create",
                "path": "x.txt",
                "content": "hello",
                "userId": "alice",
                "timestamp": "2026-01-01T00:00:00Z",
            }
            await a.file_op(**op)
            got = await b.recv("fileOperation")
        assert got == {"type": "fileOperation", "userId": "alice", "data": op}

    async def test_rename_of_a_missing_file_is_refused(self, worker: RunningWorker) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-ren", "u")
            reply = await c.file_op(type="rename", oldPath="nope.txt", newPath="b.txt")
        assert reply["error"] == "Failed to apply file operation"


HOSTILE = [
    "../x",
    "/etc/passwd",
    "a/../../b",
    "a\x00b",
    ".git/config",
    ".collaboration/x",
    "a\\b",
    "",
    "dir/",
    ".git",
    "..",
    "./../x",
]


class TestHostilePaths:
    @pytest.mark.parametrize("path", HOSTILE)
    async def test_are_refused_everywhere_and_touch_nothing(
        self, worker: RunningWorker, path: str
    ) -> None:
        async with JsonClient.connect(worker.url) as c:
            await c.join("s-hostile", "mallory")
            for op in (
                {"type": "create", "path": path, "content": "pwned"},
                {"type": "update", "path": path, "content": "pwned"},
                {"type": "delete", "path": path},
                {"type": "rename", "oldPath": path, "newPath": "ok.txt"},
            ):
                reply = await c.file_op(**op)
                assert reply["type"] == "error", op
                assert reply["error"] == "Failed to apply file operation"
                assert "path" in reply["reason"]
            await c.file_op(type="create", path="ok.txt", content="fine")
            reply = await c.file_op(type="rename", oldPath="ok.txt", newPath=path)
            assert reply["type"] == "error"
            reply = await c.request({"type": "getFile", "data": {"path": path}}, "error")
            assert reply["error"] == "Failed to get file"
            reply = await c.request(
                {"type": "yjsUpdate", "data": {"docId": path, "update": [0, 0]}}, "error"
            )
            assert reply["error"] == "Failed to apply update"
            assert await c.get_files() == ["ok.txt"]
