"""The seed's JSON message rules on their own (``contract.json_protocol``): worker and router.

Error texts are the seed's, which existing clients match on; the ``reason`` says what was wrong.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract import json_protocol as jmsg
from contract.auth import Forbidden, Unauthenticated


def refusal(call: Any, *args: Any) -> jmsg.MessageError:
    with pytest.raises(jmsg.MessageError) as refused:
        call(*args)
    return refused.value


class TestParse:
    @pytest.mark.parametrize("kind", jmsg.MESSAGE_TYPES)
    def test_every_known_type_parses_to_its_object(self, kind: str) -> None:
        """A JSON object with a known string ``type`` is returned as it is, from str or bytes."""
        message = {"type": kind, "data": {"path": "a.txt"}}
        assert jmsg.parse(json.dumps(message)) == message
        assert jmsg.parse(json.dumps(message).encode()) == message

    def test_text_that_is_not_json_is_an_invalid_format(self) -> None:
        """Unparseable text gets the seed's "Invalid message format"."""
        refused = refusal(jmsg.parse, "{not json")
        assert (refused.error, refused.reason) == (
            "Invalid message format",
            "message is not valid JSON",
        )

    @pytest.mark.parametrize("raw", ["[]", '"join"', "5", "null"])
    def test_json_that_is_not_an_object_is_an_invalid_format(self, raw: str) -> None:
        """Arrays, strings, numbers and null are refused as not being a message object."""
        refused = refusal(jmsg.parse, raw)
        assert (refused.error, refused.reason) == (
            "Invalid message format",
            "message must be a JSON object",
        )

    @pytest.mark.parametrize("raw", ["{}", '{"type": 1}', '{"type": null}', '{"data": {}}'])
    def test_an_object_without_a_string_type_is_an_invalid_format(self, raw: str) -> None:
        """A message needs a string ``type``."""
        refused = refusal(jmsg.parse, raw)
        assert refused.error == "Invalid message format"
        assert refused.reason == "message has no string 'type'"

    def test_an_unknown_type_is_named_and_the_known_ones_listed(self) -> None:
        """An unknown type gets "Unknown message type"; the reason quotes it and lists the rest."""
        refused = refusal(jmsg.parse, '{"type": "subscribe"}')
        assert refused.error == "Unknown message type"
        assert refused.reason is not None and "'subscribe'" in refused.reason
        assert all(kind in refused.reason for kind in jmsg.MESSAGE_TYPES)

    def test_a_huge_unknown_type_is_quoted_only_in_part(self) -> None:
        """A client cannot make the error reason arbitrarily long."""
        refused = refusal(jmsg.parse, json.dumps({"type": "x" * 10_000}))
        assert refused.reason is not None and len(refused.reason) < 200

    def test_a_message_error_reads_as_its_text_and_reason(self) -> None:
        """``str()`` of a refusal is "error: reason", or the error alone."""
        assert str(jmsg.MessageError("Failed", "why")) == "Failed: why"
        assert str(jmsg.MessageError("Failed")) == "Failed"


class TestJoinIds:
    def test_a_join_gives_its_session_and_user(self) -> None:
        """A valid join yields (sessionId, userId)."""
        assert jmsg.join_ids({"type": "join", "sessionId": "s-1", "userId": "alice"}) == (
            "s-1",
            "alice",
        )

    @pytest.mark.parametrize(
        "message",
        [
            {},
            {"sessionId": "s"},
            {"userId": "u"},
            {"sessionId": "", "userId": "u"},
            {"sessionId": "s", "userId": ""},
            {"sessionId": 5, "userId": "u"},
            {"sessionId": "s", "userId": ["u"]},
        ],
    )
    def test_missing_or_empty_or_non_string_ids_are_missing(self, message: dict[str, Any]) -> None:
        """Either id absent, empty or not a string is the seed's "Missing sessionId or userId"."""
        refused = refusal(jmsg.join_ids, {"type": "join", **message})
        assert (refused.error, refused.reason) == ("Missing sessionId or userId", None)

    @pytest.mark.parametrize("session", ["../x", "a/b", "x" * 200, ".hidden", "a..b", "s\x00"])
    def test_a_session_id_unfit_for_a_storage_key_is_invalid(self, session: str) -> None:
        """Session ids that could escape their storage prefix get "Invalid sessionId" and why."""
        refused = refusal(jmsg.join_ids, {"sessionId": session, "userId": "u"})
        assert refused.error == "Invalid sessionId"
        assert refused.reason is not None and "A-Z a-z 0-9 . _ -" in refused.reason

    def test_a_long_user_id_is_cut_to_256_characters(self) -> None:
        """User ids are kept, but at most 256 characters of them."""
        _, user = jmsg.join_ids({"sessionId": "s", "userId": "u" * 1000})
        assert user == "u" * 256


class TestDataOf:
    def test_data_is_returned_when_it_is_an_object(self) -> None:
        """``data`` of a message is handed back as it is."""
        assert jmsg.data_of({"data": {"path": "a"}}, jmsg.GET_FAILED) == {"path": "a"}

    @pytest.mark.parametrize("data", [None, [], "a.txt", 3])
    def test_required_data_that_is_not_an_object_fails_with_the_callers_text(
        self, data: object
    ) -> None:
        """The refusal carries the message's own failure text and says 'data' must be an object."""
        message = {} if data is None else {"data": data}
        refused = refusal(jmsg.data_of, message, jmsg.FILE_OP_FAILED)
        assert (refused.error, refused.reason) == (
            "Failed to apply file operation",
            "'data' must be an object",
        )

    def test_optional_data_may_be_absent(self) -> None:
        """Without ``required``, a missing ``data`` is an empty object."""
        assert jmsg.data_of({}, jmsg.LIST_FAILED, required=False) == {}


class TestUpdateBytes:
    def test_an_array_of_byte_values_is_the_update(self) -> None:
        """The seed's ``Array.from(u8)`` form."""
        assert jmsg.update_bytes([0, 1, 255]) == b"\x00\x01\xff"

    def test_node_buffer_json_is_accepted(self) -> None:
        """``Buffer.toJSON()`` gives ``{"type": "Buffer", "data": [...]}``."""
        assert jmsg.update_bytes({"type": "Buffer", "data": [7, 8]}) == b"\x07\x08"

    def test_a_stringified_uint8array_is_read_in_index_order(self) -> None:
        """``JSON.stringify(u8)`` gives index-keyed objects; "10" comes after "9", not "1"."""
        value = {str(i): i for i in range(12)}
        shuffled = dict(sorted(value.items()))  # lexicographic: "0", "1", "10", "11", "2", ...
        assert jmsg.update_bytes(shuffled) == bytes(range(12))

    @pytest.mark.parametrize(
        "value",
        [
            "AAEC",
            None,
            5,
            {"type": "Buffer"},
            {"type": "Buffer", "data": "AAEC"},
            {"a": 1},
            {"0": 1, "x": 2},
        ],
    )
    def test_anything_else_is_not_an_array_of_bytes(self, value: object) -> None:
        """Base64 strings, numbers and other objects are refused with "Failed to apply update"."""
        refused = refusal(jmsg.update_bytes, value)
        assert (refused.error, refused.reason) == (
            "Failed to apply update",
            "'update' must be an array of bytes",
        )

    @pytest.mark.parametrize("value", [[256], [-1], ["1"], [1.5], [None], {"0": 300}])
    def test_values_outside_0_to_255_are_refused(self, value: object) -> None:
        """Every element must be an integer byte."""
        refused = refusal(jmsg.update_bytes, value)
        assert (refused.error, refused.reason) == (
            "Failed to apply update",
            "'update' must hold integers 0-255",
        )


class TestReplies:
    def test_an_error_carries_a_reason_only_when_there_is_one(self) -> None:
        """``{"type":"error","error":...}`` plus ``reason`` when given."""
        assert json.loads(jmsg.error("Not joined to a session")) == {
            "type": "error",
            "error": "Not joined to a session",
        }
        assert json.loads(jmsg.error("Failed to get file", "invalid path")) == {
            "type": "error",
            "error": "Failed to get file",
            "reason": "invalid path",
        }

    def test_an_auth_refusal_is_named_by_its_close_code(self) -> None:
        """4401 reads "Authentication failed", 4403 "Access denied", each with its reason."""
        assert json.loads(jmsg.auth_error(Unauthenticated("no token"))) == {
            "type": "error",
            "error": "Authentication failed",
            "reason": "no token",
        }
        assert json.loads(jmsg.auth_error(Forbidden("not your session"))) == {
            "type": "error",
            "error": "Access denied",
            "reason": "not your session",
        }

    def test_session_replies_have_the_seeds_shapes(self) -> None:
        """joined, userJoined, userLeft, pong and fileOperationSuccess, field for field."""
        assert json.loads(jmsg.joined("s", "alice", "w-1")) == {
            "type": "joined",
            "sessionId": "s",
            "userId": "alice",
            "containerId": "w-1",
        }
        assert json.loads(jmsg.user_joined("bob")) == {"type": "userJoined", "userId": "bob"}
        assert json.loads(jmsg.user_left("bob")) == {"type": "userLeft", "userId": "bob"}
        assert json.loads(jmsg.pong()) == {"type": "pong"}
        assert json.loads(jmsg.file_operation_success()) == {"type": "fileOperationSuccess"}

    def test_edits_are_relayed_with_their_user(self) -> None:
        """A file operation is echoed as sent; a Yjs update travels as an array of bytes."""
        op = {"type": "create", "path": "a.txt", "content": "x"}
        assert json.loads(jmsg.file_operation("alice", op)) == {
            "type": "fileOperation",
            "userId": "alice",
            "data": op,
        }
        update = bytes([0, 1, 255])
        relayed = json.loads(jmsg.yjs_update("alice", "a.txt", update))
        assert relayed == {
            "type": "yjsUpdate",
            "userId": "alice",
            "data": {"docId": "a.txt", "update": [0, 1, 255]},
        }
        assert jmsg.update_bytes(relayed["data"]["update"]) == update

    def test_file_listing_and_content_replies(self) -> None:
        """files is a list of paths; fileContent has the text, or null and a binary's facts."""
        assert json.loads(jmsg.files(["a.txt", "b/c.txt"])) == {
            "type": "files",
            "data": ["a.txt", "b/c.txt"],
        }
        assert json.loads(jmsg.file_content("a.txt", "hello")) == {
            "type": "fileContent",
            "data": {"path": "a.txt", "content": "hello"},
        }
        assert json.loads(jmsg.file_content("gone.txt", None)) == {
            "type": "fileContent",
            "data": {"path": "gone.txt", "content": None},
        }
        binary = {"type": "binary", "size": 3, "sha256": "ab" * 32}
        assert json.loads(jmsg.file_content("logo.png", None, binary)) == {
            "type": "fileContent",
            "data": {
                "path": "logo.png",
                "content": None,
                "binary": True,
                "size": 3,
                "sha256": "ab" * 32,
            },
        }
