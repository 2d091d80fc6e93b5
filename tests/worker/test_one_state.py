"""One state, two views: JSON file operations and Yjs editors see the same documents."""

from __future__ import annotations

import asyncio

from tests.support import JsonClient, RunningWorker, YjsClient, wait_until


class TestOneState:
    async def test_a_file_created_over_json_is_seen_by_a_yjs_editor(
        self, worker: RunningWorker
    ) -> None:
        async with JsonClient.connect(worker.url) as j:
            await j.join("s-j2y", "alice")
            await j.file_op(type="create", path="src/main.py", content="print('hi')\n")
            async with YjsClient.connect(worker.url, "s-j2y/src/main.py") as y:
                await y.wait_text("print('hi')\n")

    async def test_a_yjs_edit_is_seen_by_get_file_and_reaches_json_clients(
        self, worker: RunningWorker
    ) -> None:
        async with (
            JsonClient.connect(worker.url) as j,
            YjsClient.connect(worker.url, "s-y2j/notes.md") as y,
        ):
            await j.join("s-y2j", "alice")
            await asyncio.wait_for(y.synced.wait(), 5)
            await y.insert(0, "typed in an editor")
            update = await j.recv("yjsUpdate")
            assert update["data"]["docId"] == "notes.md"
            assert isinstance(update["data"]["update"], list)
            assert await j.get_file("notes.md") == "typed in an editor"
            assert await j.get_files() == ["notes.md"]

    async def test_json_yjs_update_reaches_the_editor(self, worker: RunningWorker) -> None:
        from pycrdt import Doc, Text

        source = Doc()
        text = source.get("content", type=Text)
        text += "from a JSON client's own Y.Doc"
        async with (
            JsonClient.connect(worker.url) as j,
            YjsClient.connect(worker.url, "s-jy/a.txt") as y,
            JsonClient.connect(worker.url) as other,
        ):
            await j.join("s-jy", "alice")
            await other.join("s-jy", "bob")
            await j.file_op(type="create", path="a.txt", content="")
            await other.recv("fileOperation")
            await j.send(
                {
                    "type": "yjsUpdate",
                    "data": {"docId": "a.txt", "update": list(source.get_update())},
                }
            )
            await y.wait_text("from a JSON client's own Y.Doc")
            relayed = await other.recv("yjsUpdate")
            assert relayed["userId"] == "alice" and relayed["data"]["docId"] == "a.txt"
            assert await j.get_file("a.txt") == "from a JSON client's own Y.Doc"

    async def test_a_yjs_update_whose_doc_id_is_no_file_is_a_document_never_a_file(
        self, worker: RunningWorker
    ) -> None:
        """The original's example sends ``docId: 'document-id'``: such a document is kept and
        relayed to the session's other clients, but it is not listed as a file, getFile finds
        no file there, and it is never committed (only listed files are)."""
        from pycrdt import Doc, Text

        source = Doc()
        source.get("content", type=Text).insert(0, "shared state, not a file")
        update = list(source.get_update())
        async with JsonClient.connect(worker.url) as j, JsonClient.connect(worker.url) as other:
            await j.join("s-docid", "alice")
            await other.join("s-docid", "bob")
            await j.file_op(type="create", path="real.txt", content="a file")
            await other.recv("fileOperation")
            await j.send({"type": "yjsUpdate", "data": {"docId": "document-id", "update": update}})
            relayed = await other.recv("yjsUpdate")
            assert relayed["data"] == {"docId": "document-id", "update": update}
            assert await j.get_files() == ["real.txt"]
            session = worker.manager.sessions["s-docid"]
            texts, blobs = session.snapshot_files()
            assert set(texts) == {"real.txt"} and not blobs
            assert str(session.text("document-id")) == "shared state, not a file"
            assert await j.get_file("document-id") is None  # as for any path that is no file

    async def test_a_json_update_keeps_an_editors_unrelated_text(
        self, worker: RunningWorker
    ) -> None:
        """The JSON update is a CRDT edit: an editor's concurrent insert elsewhere survives."""
        async with JsonClient.connect(worker.url) as j:
            await j.join("s-merge", "alice")
            await j.file_op(
                type="create", path="f.py", content="def a():\n    pass\n\ndef b():\n    pass\n"
            )
            async with YjsClient.connect(worker.url, "s-merge/f.py") as y:
                await y.wait_text("def a():\n    pass\n\ndef b():\n    pass\n")
                # The editor types at the end while the JSON client rewrites a()'s body from
                # the old text it read: neither has seen the other's change.
                editor_insert = y.insert(len(str(y.text)), "# editor was here\n")
                json_update = j.file_op(
                    type="update",
                    path="f.py",
                    content="def a():\n    return 1\n\ndef b():\n    pass\n",
                )
                await asyncio.gather(editor_insert, json_update)
                expected = "def a():\n    return 1\n\ndef b():\n    pass\n# editor was here\n"
                await y.wait_text(expected)
            assert await j.get_file("f.py") == expected

    async def test_delete_and_rename_show_in_the_index_document(
        self, worker: RunningWorker
    ) -> None:
        async with (
            JsonClient.connect(worker.url) as j,
            YjsClient.connect(worker.url, "s-index") as idx,
        ):
            await j.join("s-index", "alice")
            await j.file_op(type="create", path="a.txt", content="a")
            await j.file_op(type="create", path="b.txt", content="b")
            await idx.wait_for(lambda: sorted(idx.files.keys()) == ["a.txt", "b.txt"])
            await j.file_op(type="delete", path="a.txt")
            await j.file_op(type="rename", oldPath="b.txt", newPath="docs/b.txt")
            await idx.wait_for(lambda: sorted(idx.files.keys()) == ["docs/b.txt"])

    async def test_two_editors_converge(self, worker: RunningWorker) -> None:
        async with (
            YjsClient.connect(worker.url, "s-two/x.txt") as a,
            YjsClient.connect(worker.url, "s-two/x.txt") as b,
        ):
            await asyncio.gather(a.synced.wait(), b.synced.wait())
            await asyncio.gather(
                *(a.insert(0, f"a{i};") for i in range(20)),
                *(b.insert(0, f"b{i};") for i in range(20)),
            )
            await wait_until(
                lambda: str(a.text) == str(b.text) and str(a.text).count(";") == 40,
                what="convergence",
            )
            assert all(f"a{i};" in str(a.text) and f"b{i};" in str(a.text) for i in range(20))

    async def test_awareness_is_relayed_and_cleared_on_disconnect(
        self, worker: RunningWorker
    ) -> None:
        from worker import yjs_protocol as yjs

        async with YjsClient.connect(worker.url, "s-aw/x.txt") as watcher:
            await asyncio.wait_for(watcher.synced.wait(), 5)
            async with YjsClient.connect(worker.url, "s-aw/x.txt") as other:
                await asyncio.wait_for(other.synced.wait(), 5)
                payload = yjs.encode_awareness([yjs.AwarenessEntry(4242, 1, '{"user":"bob"}')])
                await other.ws.send(yjs.awareness_message(payload))
                await wait_until(lambda: watcher.received >= 2, what="awareness relayed")
            # bob's socket closed without a goodbye: the room announces him gone.
            await wait_until(lambda: watcher.received >= 3, what="awareness removal")
