"""One live session on its own: edits, the index, and what is not yet durable.

No worker, no socket: a ``Session`` built from stored updates, real pycrdt updates from
``Editor`` replicas, and clients that only buffer what they are sent (``drain`` reads it).
"""

from __future__ import annotations

import json

import pytest
from pycrdt import Doc, Map, Text

from tests.support import Editor, buffering_client, drain, end_of_turn
from worker import yjs_protocol as yjs
from worker.doc_schema import EMPTY_UPDATE, INDEX_DOC
from worker.metrics import WorkerMetrics
from worker.session import Session, SessionMoving, UpdateRejected

CORRUPT = b"\x01\x02\x03"  # a struct count, then the buffer ends: pycrdt cannot decode it


def new_session(stored: dict[str, bytes] | None = None) -> Session:
    return Session("s-1", stored or {}, "w-test", WorkerMetrics())


def pending(session: Session) -> list[tuple[str, bytes, str]]:
    """(doc, update, user) of everything not yet written, oldest first; hands it back after."""
    taken = session.outbox.take_updates()
    session.outbox.restore_updates()
    return [(p.doc, p.update, p.user) for p in taken]


def listed_session() -> tuple[Session, Editor]:
    """A session whose ``a.txt`` is listed and written: only its text's updates will pend."""
    session = new_session()
    session.ensure_listed("a.txt", "alice")
    session.outbox.take_updates()
    session.outbox.updates_written()
    session.outbox.take_log()
    session.outbox.log_written()
    return session, Editor()


def typed(session: Session, editor: Editor, *values: str) -> list[bytes]:
    """Alice types each value at the start of ``a.txt``; the updates, in order."""
    alice, updates = buffering_client("alice"), []
    for value in values:
        updates.append(editor.insert(0, value))
        session.apply_client_update("a.txt", updates[-1], alice)
    return updates


def index_update(path: str, entry: dict[str, object]) -> bytes:
    """A client-side write of the index map: what the server must never accept."""
    doc: Doc = Doc()
    doc.get("files", type=Map)[path] = entry
    return doc.get_update()


class TestClientUpdates:
    def test_an_update_is_applied_once_and_buffered_for_the_next_write(self) -> None:
        """A client's update changes the live document and waits, by its user, for storage."""
        session, alice, editor = new_session(), buffering_client("alice"), Editor()
        update = editor.insert(0, "hello")
        session.apply_client_update("a.txt", update, alice)
        assert str(session.text("a.txt")) == "hello"
        assert pending(session)[0] == ("a.txt", update, "alice")
        assert session.metrics.value("collab_updates_received_total") == 1
        assert session.metrics.value("collab_update_bytes_total") == len(update)

    def test_a_corrupt_update_is_rejected_and_leaves_everything_unchanged(self) -> None:
        """Undecodable bytes raise UpdateRejected; document, pending writes and metrics stay."""
        session, alice, editor = new_session(), buffering_client("alice"), Editor()
        session.apply_client_update("a.txt", editor.insert(0, "kept"), alice)
        before = pending(session)
        with pytest.raises(UpdateRejected):
            session.apply_client_update("a.txt", CORRUPT, alice)
        assert str(session.text("a.txt")) == "kept"
        assert pending(session) == before
        assert session.metrics.value("collab_updates_received_total") == 1

    def test_a_corrupt_first_update_of_a_file_does_not_list_it(self) -> None:
        """A rejected update for a new path leaves the index without that path."""
        session = new_session()
        with pytest.raises(UpdateRejected):
            session.apply_client_update("new.txt", CORRUPT, buffering_client("alice"))
        assert not session.has_file("new.txt")
        assert not session.outbox.dirty

    def test_the_empty_update_of_a_fresh_editors_sync_is_ignored(self) -> None:
        """The two-byte empty update is neither applied, stored nor used to list a file."""
        session = new_session()
        session.apply_client_update("a.txt", EMPTY_UPDATE, buffering_client("alice"))
        assert not session.outbox.dirty
        assert not session.has_file("a.txt")

    def test_the_first_edit_of_an_unlisted_file_lists_it_under_its_editor(self) -> None:
        """Typing into a file nobody created makes it a text file of the index, by that user."""
        session = new_session()
        session.apply_client_update("src/a.py", Editor().insert(0, "x"), buffering_client("bob"))
        assert session.file_paths() == ["src/a.py"]
        entry = session.index["src/a.py"]
        assert entry["type"] == "text" and entry["by"] == "bob"
        assert [doc for doc, _, _ in pending(session)] == ["src/a.py", INDEX_DOC]

    async def test_an_update_reaches_the_other_editors_of_its_room_and_other_json_clients(
        self,
    ) -> None:
        """Yjs peers of the document get the update frame; JSON clients get a yjsUpdate."""
        session = new_session()
        alice, bob, other_doc = (buffering_client(u) for u in ("alice", "bob", "carol"))
        watcher = buffering_client("dave")
        session.attach(alice, "a.txt")
        session.attach(bob, "a.txt")
        session.attach(other_doc, "b.txt")
        session.attach(watcher, None)
        update = Editor().insert(0, "hi")
        session.apply_client_update("a.txt", update, alice)
        await end_of_turn()
        assert await drain(alice) == []
        assert await drain(bob) == [yjs.update_message(update)]
        assert await drain(other_doc) == []
        [message] = [json.loads(m) for m in await drain(watcher)]
        assert message == {
            "type": "yjsUpdate",
            "userId": "alice",
            "data": {"docId": "a.txt", "update": list(update)},
        }

    async def test_a_json_clients_update_is_not_echoed_to_it(self) -> None:
        """The JSON client that sent an update is left out of the yjsUpdate broadcast."""
        session = new_session()
        sender, listener = buffering_client("alice"), buffering_client("bob")
        session.attach(sender, None)
        session.attach(listener, None)
        session.apply_client_update("a.txt", Editor().insert(0, "hi"), sender)
        assert await drain(sender) == []
        assert [json.loads(m)["type"] for m in await drain(listener)] == ["yjsUpdate"]

    def test_a_stored_document_is_loaded_on_first_use(self) -> None:
        """A session built from stored updates serves their text and lists their files."""
        editor = Editor()
        editor.insert(0, "stored text")
        stored = {"a.txt": editor.doc.get_update(), INDEX_DOC: index_update("a.txt", {})}
        session = new_session(stored)
        assert session.file_paths() == ["a.txt"]
        assert str(session.text("a.txt")) == "stored text"
        assert not session.outbox.dirty


class TestIndex:
    async def test_client_writes_to_the_index_are_ignored(self) -> None:
        """The index is server-owned: a client's map write changes nothing and goes nowhere."""
        session = new_session()
        peer = buffering_client("peer")
        session.attach(peer, INDEX_DOC)
        session.apply_client_update(
            INDEX_DOC, index_update("evil.txt", {"type": "text"}), buffering_client("mallory")
        )
        await end_of_turn()
        assert not session.has_file("evil.txt") and "evil.txt" not in session.index
        assert not session.outbox.dirty
        assert await drain(peer) == []

    async def test_ensure_listed_adds_one_entry_and_publishes_it_to_index_readers(self) -> None:
        """Listing a path writes one index update, sent to the index room's editors."""
        session = new_session()
        reader = buffering_client("reader")
        session.attach(reader, INDEX_DOC)
        session.ensure_listed("a.txt", "alice")
        session.ensure_listed("a.txt", "bob")
        await end_of_turn()
        assert session.file_paths() == ["a.txt"]
        assert session.index["a.txt"]["by"] == "alice"
        [(doc, update, user)] = pending(session)
        assert (doc, user) == (INDEX_DOC, "alice")
        assert await drain(reader) == [yjs.update_message(update)]

    def test_unlist_removes_the_entry_and_ignores_unknown_paths(self) -> None:
        """An unlisted path is gone from the index; unlisting it again writes nothing."""
        session = new_session()
        session.ensure_listed("a.txt", "alice")
        session.unlist("a.txt", "alice")
        writes = len(pending(session))
        session.unlist("a.txt", "alice")
        assert not session.has_file("a.txt") and "a.txt" not in session.index
        assert len(pending(session)) == writes == 2

    def test_list_entry_keeps_a_binary_entry_as_it_is(self) -> None:
        """A binary file's entry is listed verbatim and answers ``binary_entry``."""
        session = new_session()
        entry = {"type": "binary", "size": 3, "sha256": "ab" * 32}
        session.list_entry("logo.png", entry, "alice")
        assert session.binary_entry("logo.png") == entry
        assert session.binary_entry("missing.png") is None


class TestLocalEdit:
    async def test_without_a_shadow_the_live_document_is_edited_and_published(self) -> None:
        """A server-side edit changes the live text, is buffered, and reaches every editor."""
        session = new_session()
        editor, json_client = buffering_client("editor"), buffering_client("json")
        session.attach(editor, "a.txt")
        session.attach(json_client, None)
        with session.local_edit("a.txt", "server-user") as doc:
            doc.get("content", type=Text).insert(0, "written")
        await end_of_turn()
        assert str(session.text("a.txt")) == "written"
        [(doc_name, update, user)] = pending(session)
        assert (doc_name, user) == ("a.txt", "server-user")
        assert await drain(editor) == [yjs.update_message(update)]
        # A file operation announces itself to JSON clients; its edit is not sent again.
        assert await drain(json_client) == []

    def test_with_a_shadow_only_what_that_client_saw_is_changed(self) -> None:
        """An edit made on a client's replica merges in: text typed since it read survives."""
        session, typist, editor = new_session(), buffering_client("typist"), Editor()
        session.apply_client_update("a.txt", editor.insert(0, "hello"), typist)
        shadow = session.copy_doc("a.txt")
        session.apply_client_update("a.txt", editor.insert(5, " world"), typist)
        with session.local_edit("a.txt", "json-user", shadow) as doc:
            text = doc.get("content", type=Text)
            del text[0:1]
            text.insert(0, "H")
        assert str(session.text("a.txt")) == "Hello world"
        assert str(shadow.get("content", type=Text)) == "Hello"
        doc_name, _, user = pending(session)[-1]
        assert (doc_name, user) == ("a.txt", "json-user")

    def test_an_edit_that_changes_nothing_writes_nothing(self) -> None:
        """An empty local edit buffers no update."""
        session = new_session()
        with session.local_edit("a.txt", "alice"):
            pass
        assert not session.outbox.dirty


class TestPendingWrites:
    def test_take_hands_over_the_buffer_in_order_and_keeps_counting_its_bytes(self) -> None:
        """Taken updates are still unflushed; new ones buffer separately behind them."""
        session, editor = listed_session()
        first = typed(session, editor, "a", "b", "c")
        taken = session.outbox.take_updates()
        assert [p.update for p in taken] == first
        assert not session.outbox.has_updates and session.outbox.dirty
        assert session.outbox.unflushed_bytes == sum(map(len, first))
        later = typed(session, editor, "later")
        assert session.outbox.has_updates
        assert session.outbox.unflushed_bytes == sum(map(len, first + later))

    def test_updates_written_forgets_only_the_written_ones(self) -> None:
        """After a write succeeds, what was buffered during it is all that remains."""
        session, editor = listed_session()
        typed(session, editor, "a", "b")
        session.outbox.take_updates()
        later = typed(session, editor, "c")
        session.outbox.updates_written()
        assert session.outbox.unflushed_bytes == sum(map(len, later))
        assert [p.update for p in session.outbox.take_updates()] == later
        session.outbox.updates_written()
        assert session.outbox.unflushed_bytes == 0 and not session.outbox.has_updates

    def test_restore_puts_a_failed_write_back_in_front_of_newer_updates(self) -> None:
        """A refused write's updates come first in the next take, their bytes counted once."""
        session, editor = listed_session()
        first = typed(session, editor, "a", "b")
        session.outbox.take_updates()
        later = typed(session, editor, "c")
        session.outbox.restore_updates()
        total = sum(map(len, first + later))
        assert session.outbox.unflushed_bytes == total
        assert [p.update for p in session.outbox.take_updates()] == first + later
        assert session.outbox.unflushed_bytes == total

    def test_oldest_pending_is_the_oldest_update_not_yet_in_storage(self) -> None:
        """The durability lag runs from the in-progress write's first update, else the buffer's."""
        session, editor = listed_session()
        assert session.outbox.oldest_pending is None
        typed(session, editor, "a")
        [taken] = session.outbox.take_updates()
        typed(session, editor, "b")
        assert session.outbox.oldest_pending == taken.at
        session.outbox.updates_written()
        assert (
            session.outbox.oldest_pending is not None and session.outbox.oldest_pending >= taken.at
        )
        session.outbox.take_updates()
        session.outbox.updates_written()
        assert session.outbox.oldest_pending is None

    def test_one_write_at_a_time(self) -> None:
        """Taking again before the previous write ended is refused."""
        session, editor = listed_session()
        typed(session, editor, "a")
        session.outbox.take_updates()
        typed(session, editor, "b")
        with pytest.raises(RuntimeError, match="one write at a time"):
            session.outbox.take_updates()

    def test_a_refused_take_leaves_the_byte_counts_alone(self) -> None:
        """A take refused while a write is in progress does not change the unflushed bytes."""
        session, editor = listed_session()
        typed(session, editor, "a")
        session.outbox.take_updates()
        typed(session, editor, "b")
        before = session.outbox.unflushed_bytes
        with pytest.raises(RuntimeError):
            session.outbox.take_updates()
        assert session.outbox.unflushed_bytes == before

    def test_dirty_until_updates_and_log_are_both_written(self) -> None:
        """A session is clean only when no update, log entry or open edit burst is left."""
        session, editor = listed_session()
        assert not session.outbox.dirty
        typed(session, editor, "a")
        session.outbox.take_updates()
        session.outbox.updates_written()
        assert session.outbox.dirty  # the edit burst is still open
        session.outbox.take_log()
        assert session.outbox.dirty  # the log write has not ended
        session.outbox.log_written()
        assert not session.outbox.dirty


class TestOperationsLog:
    def test_a_documents_edits_form_one_burst_closed_by_take_log(self) -> None:
        """Consecutive client edits of a file are one ``edit`` entry with their users and bytes."""
        session, editor = new_session(), Editor()
        alice, bob = buffering_client("alice"), buffering_client("bob")
        updates = [editor.insert(0, "a"), editor.insert(0, "b"), editor.insert(0, "c")]
        for update, client in zip(updates, (alice, bob, alice), strict=True):
            session.apply_client_update("a.txt", update, client)
        assert session.outbox.has_log and not session.outbox.has_file_ops
        [entry] = session.outbox.take_log()
        assert entry["op"] == "edit" and entry["path"] == "a.txt"
        assert entry["worker"] == "w-test" and entry["userId"] == "alice"
        assert entry["updates"] == 3 and entry["bytes"] == sum(map(len, updates))
        assert entry["users"] == ["alice", "bob"]
        assert not session.outbox.has_log
        session.outbox.log_written()
        session.apply_client_update("a.txt", editor.insert(0, "d"), bob)
        [again] = session.outbox.take_log()
        assert again["updates"] == 1 and again["users"] == ["bob"]

    def test_file_operations_come_before_the_bursts_closed_with_them(self) -> None:
        """Logged file operations keep their order; open bursts are appended when taken."""
        session = new_session()
        session.apply_client_update("a.txt", Editor().insert(0, "x"), buffering_client("alice"))
        session.log("create", "bob", "b.txt", 3)
        session.log("rename", "bob", "c.txt", 3, oldPath="b.txt")
        assert session.outbox.has_file_ops
        entries = session.outbox.take_log()
        assert [e["op"] for e in entries] == ["create", "rename", "edit"]
        assert entries[1]["oldPath"] == "b.txt" and entries[1]["bytes"] == 3

    def test_server_edits_are_not_logged_as_edit_bursts(self) -> None:
        """A local edit (a file operation's) opens no burst: the operation logs itself."""
        session = new_session()
        with session.local_edit("a.txt", "alice") as doc:
            doc.get("content", type=Text).insert(0, "x")
        assert session.outbox.take_log() == []

    def test_restore_log_puts_a_failed_writes_entries_back_in_front(self) -> None:
        """A refused log write is retried with its entries first, then those logged since."""
        session = new_session()
        session.log("create", "alice", "a.txt", 1)
        first = session.outbox.take_log()
        session.log("delete", "alice", "a.txt", 0)
        session.outbox.restore_log()
        assert [e["op"] for e in session.outbox.take_log()] == ["create", "delete"]
        assert first[0]["op"] == "create"


class TestMoving:
    def test_a_moving_session_refuses_client_updates(self) -> None:
        """Once marked moving, a client's update raises SessionMoving and changes nothing."""
        session, editor = new_session(), Editor()
        session.apply_client_update("a.txt", editor.insert(0, "before"), buffering_client("a"))
        session.moving = True
        with pytest.raises(SessionMoving):
            session.apply_client_update("a.txt", editor.insert(0, "after"), buffering_client("a"))
        assert str(session.text("a.txt")) == "before"
        assert len(pending(session)) == 2  # the text and its index entry, from before

    def test_a_moving_session_refuses_server_edits(self) -> None:
        """A file operation on a moving session raises SessionMoving before touching anything."""
        session = new_session()
        session.moving = True
        with pytest.raises(SessionMoving), session.local_edit("a.txt", "alice") as doc:
            doc.get("content", type=Text).insert(0, "never")
        assert str(session.text("a.txt")) == ""
        assert not session.outbox.dirty


class TestClients:
    def test_a_room_goes_when_its_last_editor_leaves_and_the_session_turns_idle(self) -> None:
        """Detaching the last client drops its room and starts the idle clock."""
        session = new_session()
        editor, json_client = buffering_client("e"), buffering_client("j")
        session.attach(editor, "a.txt")
        session.attach(json_client, None)
        assert session.client_count == 2 and session.idle_since is None
        session.detach(editor, "a.txt")
        assert "a.txt" not in session.rooms and session.idle_since is None
        session.detach(json_client, None)
        assert session.client_count == 0 and session.idle_since is not None

    def test_close_clients_closes_every_json_client_and_editor(self) -> None:
        """A hand-off closes everyone with the code and reason given."""
        session = new_session()
        clients = [buffering_client(u) for u in ("a", "b", "c")]
        session.attach(clients[0], None)
        session.attach(clients[1], "a.txt")
        session.attach(clients[2], "b.txt")
        session.close_clients(1012, "moved")
        assert all(c.closing and (c.close_code, c.close_reason) == (1012, "moved") for c in clients)
