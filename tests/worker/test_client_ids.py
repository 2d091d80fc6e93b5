"""One Yjs client ID writes through one live connection per document.

Two replicas that share a client ID (pycrdt docs given the same ``client_id`` here, as a
forked process or a badly seeded generator would make them) write different items under the
same names. Unchecked, each side keeps the first of each name it sees: one client ends with its
own text, the other and the stored file with a mix (the README example's divergence). The
worker refuses the second connection's writes instead, with 4409 and a reason that says what to
do, and counts it; nothing either client wrote is lost or mixed.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

from tests.support import JsonClient, RunningWorker, YjsClient, run_worker, settings_for, wait_until
from worker import yjs_protocol as yjs
from worker.settings import StorageSettings

SHARED_ID = 424242


def replica(client_id: int = SHARED_ID) -> Doc:
    return Doc(client_id=client_id)


def conflicts(worker: RunningWorker) -> float:
    return float(worker.app.state.metrics.value("collab_client_id_conflicts_total"))


class TestSharedClientId:
    async def test_the_second_writer_of_an_id_is_refused_and_nothing_is_mixed(
        self, worker: RunningWorker
    ) -> None:
        async with (
            YjsClient.connect(worker.url, "s-id/a.txt", doc=replica()) as alpha,
            YjsClient.connect(worker.url, "s-id/a.txt", doc=replica()) as beta,
            YjsClient.connect(worker.url, "s-id/a.txt") as watcher,
        ):
            for c in (alpha, beta, watcher):
                await asyncio.wait_for(c.synced.wait(), 5)
            await alpha.insert(0, "<alpha-sentence>")
            await watcher.wait_text("<alpha-sentence>")
            await beta.insert(0, "<beta-longer-sentence>")
            await wait_until(lambda: beta.close_code is not None, 5, "closed")
            assert beta.close_code == 4409
            assert "start with a fresh document" in beta.close_reason
            assert str(SHARED_ID) in beta.close_reason
            await alpha.insert(len(str(alpha.text)), " and more")
            await watcher.wait_text("<alpha-sentence> and more")
            assert str(alpha.text) == "<alpha-sentence> and more"
            # beta had alpha's items before it wrote; its own edit reached nobody
            assert str(beta.text) == "<beta-longer-sentence><alpha-sentence>"
        session = worker.manager.sessions["s-id"]
        assert str(session.text("a.txt")) == "<alpha-sentence> and more"
        assert conflicts(worker) == 1

    async def test_two_replicas_appending_at_the_same_instant_end_with_one_text_not_a_mix(
        self, worker: RunningWorker
    ) -> None:
        """The README scene with a shared ID, ten rounds: whichever write arrives first wins.
        The other is refused (4409) when it brings items past the winner's (the longer
        sentence); a shorter one names only items the document has already, so it changes
        nothing and is not noticed (docs/reliability.md). Either way the stored text is one
        whole sentence, every round, never a mix."""
        sentences = ("Alice was here. ", "Bob too. ")
        refused = 0
        for round_ in range(10):
            room = f"s-race-{round_}/hello.txt"
            async with (
                YjsClient.connect(worker.url, room, doc=replica()) as a,
                YjsClient.connect(worker.url, room, doc=replica()) as b,
            ):
                await asyncio.wait_for(a.synced.wait(), 5)
                await asyncio.wait_for(b.synced.wait(), 5)
                await asyncio.gather(a.insert(0, sentences[0]), b.insert(0, sentences[1]))
                session = worker.manager.sessions[room.split("/")[0]]
                await wait_until(lambda s=session: str(s.text("hello.txt")) != "", 5, "a write")
                stored = str(session.text("hello.txt"))
                assert stored in sentences
                winner, loser = (a, b) if stored == sentences[0] else (b, a)
                if stored == sentences[1]:  # the longer one came second
                    await wait_until(lambda c=loser: c.close_code is not None, 5, "the refusal")
                    assert loser.close_code == 4409
                    refused += 1
                await asyncio.sleep(0.3)
                assert winner.close_code is None and str(winner.text) == stored
                assert str(session.text("hello.txt")) == stored
        assert conflicts(worker) == refused

    async def test_pycrdts_own_provider_is_refused_the_same_way(
        self, worker: RunningWorker
    ) -> None:
        """Unmodified pycrdt providers (the README's Python client), one ID for two docs."""
        url = worker.http.replace("http", "ws") + "/yjs/s-prov/a.txt"
        first, second = replica(), replica()
        async with aconnect_ws(url) as ws1, Provider(first, HttpxWebsocket(ws1, "s-prov/a.txt")):
            await asyncio.sleep(0.3)  # synced
            first.get("content", type=Text).insert(0, "first replica. ")
            await wait_until(lambda: "s-prov" in worker.manager.sessions, 5, "session")
            session = worker.manager.sessions["s-prov"]
            await wait_until(lambda: str(session.text("a.txt")) == "first replica. ", 5, "first")
            try:
                async with (
                    aconnect_ws(url) as ws2,
                    Provider(second, HttpxWebsocket(ws2, "s-prov/a.txt")),
                ):
                    await asyncio.sleep(0.3)
                    second.get("content", type=Text).insert(0, "second replica, longer. ")
                    await wait_until(lambda: conflicts(worker) == 1, 5, "the conflict counted")
                    await asyncio.sleep(0.2)
            except* Exception:
                pass  # pycrdt's provider fails on its own once the server has closed its socket
            assert str(session.text("a.txt")) == "first replica. "
            assert str(first.get("content", type=Text)) == "first replica. "

    async def test_a_json_client_sending_as_a_taken_id_gets_an_error_then_4409(
        self, worker: RunningWorker
    ) -> None:
        editor_doc, json_doc = replica(), replica()
        json_doc.get("content", type=Text).insert(0, "from the JSON client")
        async with YjsClient.connect(worker.url, "s-jid/a.txt", doc=editor_doc) as editor:
            await asyncio.wait_for(editor.synced.wait(), 5)
            await editor.insert(0, "from the editor")
            async with JsonClient.connect(worker.url) as j:
                await j.join("s-jid", "jay")
                await j.file_op(type="create", path="b.txt", content="kept")
                update = list(json_doc.get_update())
                await j.send({"type": "yjsUpdate", "data": {"docId": "a.txt", "update": update}})
                error = await j.recv("error")
                assert error["error"] == "Failed to apply update"
                assert "start with a fresh document" in error["reason"]
                await wait_until(lambda: j.ws.close_code is not None, 5, "closed")
                assert j.ws.close_code == 4409
        session = worker.manager.sessions["s-jid"]
        assert str(session.text("a.txt")) == "from the editor"
        assert str(session.text("b.txt")) == "kept"  # what it wrote before is kept

    async def test_the_refused_replica_cannot_bring_its_items_in_as_a_catch_up(
        self, worker: RunningWorker
    ) -> None:
        """A client that reconnects after 4409 without starting afresh (y-websocket before 3,
        which reconnects on any close) sends its items in a sync step 2: refused too, while
        the ID's owner is connected."""
        impostor = replica()
        async with YjsClient.connect(worker.url, "s-q/a.txt", doc=replica()) as owner:
            await asyncio.wait_for(owner.synced.wait(), 5)
            await owner.insert(0, "owner's text")
            async with YjsClient.connect(worker.url, "s-q/a.txt", doc=impostor) as first:
                await asyncio.wait_for(first.synced.wait(), 5)
                await first.insert(0, "impostor's text, longer")
                await wait_until(lambda: first.close_code is not None, 5, "closed")
            # Reconnecting with the same replica: its state vector claims the ID's clocks, so
            # the server's step 2 says nothing new and its own step 2 carries its items.
            async with YjsClient.connect(worker.url, "s-q/a.txt", doc=impostor) as again:
                await wait_until(lambda: again.close_code is not None, 5, "closed")
                assert again.close_code == 4409
            session = worker.manager.sessions["s-q"]
            assert str(session.text("a.txt")) == "owner's text"
        assert conflicts(worker) == 2


class TestDeadOwner:
    async def test_an_owner_that_no_longer_answers_gives_its_id_to_the_reconnected_client(
        self, tmp_path: Path
    ) -> None:
        """The old connection is half-open (it answers no ping): the client reconnected
        before the server noticed. The new connection writes as the same ID after a probe, and
        the old one is closed; nothing is refused or counted."""
        settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
        async with run_worker(settings) as worker:
            doc = replica()
            sock = socket.create_connection(("127.0.0.1", settings.port))
            try:
                sock.sendall(
                    b"GET /yjs/s-dead/a.txt HTTP/1.1\r\nHost: w\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                doc.get("content", type=Text).insert(0, "before the network went quiet. ")
                sock.sendall(_masked(yjs.update_message(doc.get_update())))
                await wait_until(lambda: "s-dead" in worker.manager.sessions, 5, "session")
                session = worker.manager.sessions["s-dead"]
                await wait_until(lambda: str(session.text("a.txt")) != "", 5, "the first edit")
                # From here on the old socket is never read again: it answers no ping.
                async with YjsClient.connect(worker.url, "s-dead/a.txt", doc=doc) as again:
                    await asyncio.wait_for(again.synced.wait(), 5)
                    await again.insert(len(str(again.text)), "After the reconnect.")
                    await wait_until(
                        lambda: str(session.text("a.txt")).endswith("After the reconnect."),
                        10,
                        "the reconnected client's edit",
                    )
                    assert again.close_code is None
                assert conflicts(worker) == 0
            finally:
                sock.close()


def _masked(payload: bytes) -> bytes:
    """One masked binary frame (a client's), with a zero mask."""
    n = len(payload)
    if n < 126:
        header = bytes([0x82, 0x80 | n])
    else:
        header = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    return header + b"\0\0\0\0" + payload
