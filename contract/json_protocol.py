"""The seed's JSON protocol: parse, validate, and the exact reply shapes. No I/O.

Error texts are the seed's, kept exactly so existing clients keep matching them; where the seed's
text is generic, a ``reason`` field says what was wrong and how to fix it.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import close_codes as codes
from .auth import AuthRefused
from .ids import validate_session_id

MESSAGE_TYPES = ("join", "fileOperation", "yjsUpdate", "getFiles", "getFile", "ping")
FILE_OPERATIONS = ("create", "update", "delete", "rename")

# The seed's error texts.
INVALID_FORMAT = "Invalid message format"
UNKNOWN_TYPE = "Unknown message type"
MISSING_IDS = "Missing sessionId or userId"
NOT_JOINED = "Not joined to a session"
SESSION_NOT_FOUND = "Session not found"
FILE_OP_FAILED = "Failed to apply file operation"
UPDATE_FAILED = "Failed to apply update"
LIST_FAILED = "Failed to list files"
GET_FAILED = "Failed to get file"
# Ours, for cases the seed never met.
ALREADY_JOINED = "Already joined to a session"
INVALID_SESSION = "Invalid sessionId"
SESSION_UNAVAILABLE = "Session unavailable"
UNAUTHENTICATED = "Authentication failed"
FORBIDDEN = "Access denied"


class MessageError(ValueError):
    """A client message is refused; ``error`` is the seed's text, ``reason`` the detail."""

    def __init__(self, error: str, reason: str | None = None) -> None:
        super().__init__(f"{error}: {reason}" if reason else error)
        self.error = error
        self.reason = reason


def parse(raw: str | bytes) -> dict[str, Any]:
    """Decodes one client message; raises MessageError on malformed or unknown messages."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MessageError(INVALID_FORMAT, "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise MessageError(INVALID_FORMAT, "message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise MessageError(INVALID_FORMAT, "message has no string 'type'")
    if kind not in MESSAGE_TYPES:
        raise MessageError(
            UNKNOWN_TYPE, f"type {kind[:64]!r} is not one of {', '.join(MESSAGE_TYPES)}"
        )
    return message


def join_ids(message: dict[str, Any]) -> tuple[str, str]:
    """(sessionId, userId) of a ``join``; the one rule, used by the worker and the router."""
    session_id, user_id = message.get("sessionId"), message.get("userId")
    if not isinstance(session_id, str) or not session_id:
        raise MessageError(MISSING_IDS)
    if not isinstance(user_id, str) or not user_id:
        raise MessageError(MISSING_IDS)
    try:
        return validate_session_id(session_id), user_id[:256]
    except ValueError as exc:
        raise MessageError(INVALID_SESSION, str(exc)) from None


def data_of(message: dict[str, Any], error: str, *, required: bool = True) -> dict[str, Any]:
    data = message.get("data")
    if data is None and not required:
        return {}
    if not isinstance(data, dict):
        raise MessageError(error, "'data' must be an object")
    return data


def update_bytes(value: object) -> bytes:
    """The JSON form of a Yjs update: an array of byte values (the seed's ``Array.from(u8)``)."""
    if isinstance(value, dict):  # Buffer.toJSON() / a Uint8Array serialized by JSON.stringify
        if value.get("type") == "Buffer":
            value = value.get("data")
        elif all(isinstance(k, str) and k.isdigit() for k in value):
            value = [value[k] for k in sorted(value, key=int)]
    if not isinstance(value, list):
        raise MessageError(UPDATE_FAILED, "'update' must be an array of bytes")
    try:
        return bytes(value)
    except (TypeError, ValueError):
        raise MessageError(UPDATE_FAILED, "'update' must hold integers 0-255") from None


def dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def error(text: str, reason: str | None = None) -> str:
    body: dict[str, Any] = {"type": "error", "error": text}
    if reason:
        body["reason"] = reason
    return dumps(body)


def auth_error(refused: AuthRefused) -> str:
    """The error a client is sent before its connection is closed with ``refused.code``."""
    text = FORBIDDEN if refused.code == codes.FORBIDDEN else UNAUTHENTICATED
    return error(text, refused.reason)


def joined(session_id: str, user_id: str, container_id: str) -> str:
    return dumps(
        {"type": "joined", "sessionId": session_id, "userId": user_id, "containerId": container_id}
    )


def user_joined(user_id: str) -> str:
    return dumps({"type": "userJoined", "userId": user_id})


def user_left(user_id: str) -> str:
    return dumps({"type": "userLeft", "userId": user_id})


def file_operation_success() -> str:
    return dumps({"type": "fileOperationSuccess"})


def file_operation(user_id: str, data: dict[str, Any]) -> str:
    return dumps({"type": "fileOperation", "userId": user_id, "data": data})


def yjs_update(user_id: str, doc_id: str, update: bytes) -> str:
    return dumps(
        {"type": "yjsUpdate", "userId": user_id, "data": {"docId": doc_id, "update": list(update)}}
    )


def files(paths: list[str]) -> str:
    return dumps({"type": "files", "data": paths})


def file_content(path: str, content: str | None, binary: dict[str, Any] | None = None) -> str:
    """A binary file answers ``content: null`` with ``binary: true``, its size and sha256."""
    data: dict[str, Any] = {"path": path, "content": content}
    if binary is not None:
        data.update(binary=True, size=binary.get("size"), sha256=binary.get("sha256"))
    return dumps({"type": "fileContent", "data": data})


def pong() -> str:
    return dumps({"type": "pong"})
