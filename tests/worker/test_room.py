"""One document's room on its own: fan-out to its editors, and their awareness.

Clients only buffer what they are sent (``drain`` reads it); updates are real pycrdt updates.
A room sends at the end of the event-loop turn, so tests let that turn end (``end_of_turn``).
"""

from __future__ import annotations

import json

from pycrdt import Doc, Text

from tests.support import Editor, buffering_client, drain, end_of_turn
from worker import yjs_protocol as yjs
from worker.client import Client, Payload
from worker.room import Room


class Counted:
    """The room's ``on_sent`` callback: how many messages each fan-out queued."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, sent: int) -> None:
        self.calls.append(sent)


def room_with(*users: str) -> tuple[Room, Counted, list[Client]]:
    sent = Counted()
    room = Room("a.txt", sent)
    clients = [buffering_client(user) for user in users]
    for client in clients:
        room.join(client)
    return room, sent, clients


def text_of(frames: list[Payload]) -> str:
    """The text a fresh replica holds after applying every update frame received."""
    doc: Doc = Doc()
    for frame in frames:
        assert isinstance(frame, bytes)
        parsed = yjs.parse(frame)
        assert (parsed.kind, parsed.step) == (yjs.MSG_SYNC, yjs.SYNC_UPDATE)
        doc.apply_update(parsed.payload)
    return str(doc.get("content", type=Text))


def awareness(client_id: int, clock: int, state: object) -> tuple[bytes, bytes]:
    """(payload, frame) of one client's awareness update."""
    payload = yjs.encode_awareness([yjs.AwarenessEntry(client_id, clock, json.dumps(state))])
    return payload, yjs.awareness_message(payload)


def awareness_of(frame: Payload) -> dict[int, tuple[int, object]]:
    """client id → (clock, state) of an awareness message."""
    assert isinstance(frame, bytes)
    parsed = yjs.parse(frame)
    assert parsed.kind == yjs.MSG_AWARENESS
    return {
        e.client_id: (e.clock, json.loads(e.state)) for e in yjs.parse_awareness(parsed.payload)
    }


class TestFanOut:
    async def test_an_update_reaches_every_client_but_its_origin(self) -> None:
        """One update is queued once to each other client and never echoed to its sender."""
        room, sent, (alice, bob, carol) = room_with("alice", "bob", "carol")
        update = Editor().insert(0, "hi")
        room.publish(update, None, alice)
        await end_of_turn()
        assert await drain(alice) == []
        assert await drain(bob) == await drain(carol) == [yjs.update_message(update)]
        assert sent.calls == [2]

    async def test_a_frame_already_received_is_relayed_as_it_is(self) -> None:
        """Given the client's own frame, the room forwards those bytes instead of re-encoding."""
        room, _, (alice, bob) = room_with("alice", "bob")
        update = Editor().insert(0, "hi")
        frame = yjs.update_message(update)
        room.publish(update, frame, alice)
        await end_of_turn()
        [received] = await drain(bob)
        assert received is frame

    async def test_a_server_edit_reaches_every_client(self) -> None:
        """An update with no origin (a file operation's) goes to all editors."""
        room, sent, clients = room_with("alice", "bob")
        room.publish(Editor().insert(0, "from the server"), None, None)
        await end_of_turn()
        for client in clients:
            assert text_of(await drain(client)) == "from the server"
        assert sent.calls == [2]

    async def test_several_updates_of_one_turn_are_one_merged_message(self) -> None:
        """Updates from two editors within one turn reach a third as one message holding both."""
        room, sent, (alice, bob, carol) = room_with("alice", "bob", "carol")
        room.publish(Editor().insert(0, "A"), None, alice)
        room.publish(Editor().insert(0, "B"), None, bob)
        await end_of_turn()
        [merged] = await drain(carol)
        assert sorted(text_of([merged])) == ["A", "B"]
        # With two origins the merged message goes to both (a harmless, idempotent echo).
        assert await drain(alice) == await drain(bob) == [merged]
        assert sent.calls == [3]

    async def test_one_editors_burst_in_one_turn_is_merged_and_not_echoed(self) -> None:
        """Several updates of one origin in a turn are one message, still kept from the origin."""
        room, _, (alice, bob) = room_with("alice", "bob")
        editor = Editor()
        for ch in "abc":
            room.publish(editor.insert(len(editor.text), ch), None, alice)
        await end_of_turn()
        assert await drain(alice) == []
        frames = await drain(bob)
        assert len(frames) == 1 and text_of(frames) == "abc"

    async def test_updates_of_different_turns_are_separate_messages(self) -> None:
        """What arrives after the turn ended is sent in a message of its own."""
        room, sent, (alice, bob) = room_with("alice", "bob")
        editor = Editor()
        room.publish(editor.insert(0, "1"), None, alice)
        await end_of_turn()
        room.publish(editor.insert(1, "2"), None, alice)
        await end_of_turn()
        frames = await drain(bob)
        assert len(frames) == 2 and text_of(frames) == "12"
        assert sent.calls == [1, 1]

    async def test_an_origin_alone_in_its_room_queues_nothing(self) -> None:
        """With nobody else to tell, an update schedules no fan-out at all."""
        room, sent, (alice,) = room_with("alice")
        room.publish(Editor().insert(0, "x"), None, alice)
        await end_of_turn()
        assert sent.calls == []
        assert await drain(alice) == []

    async def test_a_closing_client_is_skipped_and_not_counted(self) -> None:
        """A client already closing is not sent to, and the count says so."""
        room, sent, (alice, bob, carol) = room_with("alice", "bob", "carol")
        carol.close(1000, "bye")
        room.publish(Editor().insert(0, "x"), None, alice)
        await end_of_turn()
        assert sent.calls == [1]
        assert len(await drain(bob)) == 1

    def test_close_all_closes_every_client_with_the_code_and_reason(self) -> None:
        """A hand-off closes each editor of the room the same way."""
        room, _, clients = room_with("alice", "bob")
        room.close_all(1012, "moved")
        for client in clients:
            assert (client.closing, client.close_code, client.close_reason) == (True, 1012, "moved")


class TestAwareness:
    async def test_an_awareness_update_is_relayed_to_the_others_as_it_came(self) -> None:
        """The sender's frame goes, unchanged, to everyone else in the room."""
        room, _, (alice, bob, carol) = room_with("alice", "bob", "carol")
        payload, frame = awareness(11, 1, {"user": "alice"})
        room.awareness(alice, payload, frame)
        assert await drain(alice) == []
        assert await drain(bob) == await drain(carol) == [frame]

    def test_a_newcomer_gets_every_live_state_in_one_snapshot(self) -> None:
        """The snapshot holds the latest state per client id, without clients that said bye."""
        room, _, (alice, bob, carol) = room_with("alice", "bob", "carol")
        assert room.awareness_snapshot() is None
        room.awareness(alice, *awareness(11, 1, {"cursor": 1}))
        room.awareness(alice, *awareness(11, 2, {"cursor": 5}))
        room.awareness(bob, *awareness(22, 1, {"cursor": 9}))
        room.awareness(carol, *awareness(33, 1, {"cursor": 0}))
        room.awareness(carol, *awareness(33, 2, None))
        snapshot = room.awareness_snapshot()
        assert snapshot is not None
        assert awareness_of(snapshot) == {11: (2, {"cursor": 5}), 22: (1, {"cursor": 9})}

    def test_an_older_clock_does_not_replace_a_newer_state(self) -> None:
        """A late, reordered update of a client id is ignored for the snapshot."""
        room, _, (alice, _) = room_with("alice", "bob")
        room.awareness(alice, *awareness(11, 5, {"v": "new"}))
        room.awareness(alice, *awareness(11, 4, {"v": "old"}))
        snapshot = room.awareness_snapshot()
        assert snapshot is not None and awareness_of(snapshot) == {11: (5, {"v": "new"})}

    async def test_a_client_leaving_without_goodbye_is_announced_as_gone(self) -> None:
        """The others get its ids with state null at the next clock; the snapshot forgets it."""
        room, sent, (alice, bob) = room_with("alice", "bob")
        room.awareness(bob, *awareness(22, 3, {"user": "bob"}))
        room.leave(bob)
        assert bob not in room.clients
        hello, gone = await drain(alice)
        assert awareness_of(hello) == {22: (3, {"user": "bob"})}
        assert awareness_of(gone) == {22: (4, None)}
        assert room.awareness_snapshot() is None
        assert sent.calls[-1] == 1

    async def test_a_client_that_said_goodbye_is_not_announced_again(self) -> None:
        """After its own null state, leaving sends the others nothing more."""
        room, _, (alice, bob) = room_with("alice", "bob")
        room.awareness(bob, *awareness(22, 1, {"user": "bob"}))
        room.awareness(bob, *awareness(22, 2, None))
        room.leave(bob)
        assert [awareness_of(f) for f in await drain(alice)] == [
            {22: (1, {"user": "bob"})},
            {22: (2, None)},
        ]

    async def test_only_the_leaving_clients_own_ids_are_announced(self) -> None:
        """Another client's awareness survives one client's departure."""
        room, _, (alice, bob, carol) = room_with("alice", "bob", "carol")
        room.awareness(alice, *awareness(11, 1, {"user": "alice"}))
        room.awareness(bob, *awareness(22, 1, {"user": "bob"}))
        room.leave(bob)
        frames = await drain(carol)
        assert awareness_of(frames[-1]) == {22: (2, None)}
        snapshot = room.awareness_snapshot()
        assert snapshot is not None and awareness_of(snapshot) == {11: (1, {"user": "alice"})}

    def test_the_room_describes_its_clients_and_awareness(self) -> None:
        """``describe`` counts the room's clients and the awareness states it keeps."""
        room, _, (alice, _) = room_with("alice", "bob")
        room.awareness(alice, *awareness(11, 1, {}))
        assert room.describe() == {"doc": "a.txt", "clients": 2, "awareness": 1}
