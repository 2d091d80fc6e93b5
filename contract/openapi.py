"""The HTTP API's OpenAPI 3.1 description: served by the router at ``/api/openapi.json``.

Written once, here, beside the other parts of the contract: the workers implement it
(``worker/endpoints/http_api.py``), the router routes it (``router/api_proxy.py``), and the
tests check every answer of the real implementation against it (``tests/api``).
"""

from __future__ import annotations

from typing import Any

_ERROR_STATUSES = {
    "400": "A malformed request: invalid session id, hostile path, bad JSON",
    "401": "No token, or a bad one (with AUTH_SECRET)",
    "403": "The token does not allow this session, or is read-only for it",
    "404": "No such file or commit",
    "409": "The request conflicts with the session's state (a binary file, an existing path)",
    "413": "The body exceeds MAX_MESSAGE_BYTES, or the write would pass MAX_UPDATE_BYTES or"
    " MAX_DOC_BYTES (the limit and its value in reason)",
    "421": "This worker does not own the session; X-Collab-Owner* headers name the owner",
    "503": "The session is unavailable now (storage, draining, a takeover pending): retry",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("Error"), _ERROR_STATUSES[code]) for code in codes}


def _op(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[str, ...],
    body: str | None = None,
    status: str = "200",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {status: _json(ok, summary), **_errors(*errors)},
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


SESSION = {"name": "session", "in": "path", "required": True, "schema": {"type": "string"}}
PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
SHA = {"name": "sha", "in": "path", "required": True, "schema": {"type": "string"}}

_READ = ("400", "401", "403", "421", "503")
_WRITE = ("400", "401", "403", "409", "413", "421", "503")

_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "reason"],
        "properties": {"error": _STR, "reason": _STR},
    },
    "SessionRow": {
        "type": "object",
        "required": ["id", "lastActive", "users", "isGitRepo"],
        "properties": {
            "id": _STR,
            "lastActive": {"type": ["string", "null"]},
            "users": _STRS,
            "isGitRepo": {"type": "boolean"},
        },
    },
    "Sessions": {
        "type": "object",
        "required": ["sessions"],
        "properties": {"sessions": {"type": "array", "items": _ref("SessionRow")}},
    },
    "NewSession": {"type": "object", "properties": {"id": _STR}},
    "Created": {"type": "object", "required": ["id"], "properties": {"id": _STR}},
    "FileRow": {
        "type": "object",
        "required": ["path", "type"],
        "properties": {
            "path": _STR,
            "type": {"enum": ["text", "binary"]},
            "size": {"type": ["integer", "null"]},
        },
    },
    "Files": {
        "type": "object",
        "required": ["files"],
        "properties": {"files": {"type": "array", "items": _ref("FileRow")}},
    },
    "FileContent": {
        "type": "object",
        "required": ["path", "content"],
        "properties": {
            "path": _STR,
            "content": {"type": ["string", "null"]},
            "binary": {"type": "boolean"},
            "size": {"type": ["integer", "null"]},
            "sha256": {"type": ["string", "null"]},
            "version": {
                "type": "string",
                "description": "Pass as 'base' to a write based on this read",
            },
        },
    },
    "NewContent": {
        "type": "object",
        "required": ["content"],
        "properties": {
            "content": _STR,
            "base": {
                "type": "string",
                "description": (
                    "The version of a read this content was made from: the change is merged "
                    "so edits made since survive. Without it the content replaces the text."
                ),
            },
        },
    },
    "Written": {
        "type": "object",
        "required": ["path", "created"],
        "properties": {
            "path": _STR,
            "created": {"type": "boolean"},
            "version": {"type": ["string", "null"]},
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["path", "deleted"],
        "properties": {"path": _STR, "deleted": {"const": True}},
    },
    "Rename": {
        "type": "object",
        "required": ["from", "to"],
        "properties": {"from": _STR, "to": _STR},
    },
    "Committed": {
        "type": "object",
        "required": ["commit", "changed", "result"],
        "properties": {
            "commit": {"type": ["string", "null"]},
            "changed": _STRS,
            "result": {"enum": ["committed", "nothing changed"]},
        },
    },
    "Commit": {
        "type": "object",
        "required": ["sha", "author", "coauthors", "message", "time", "files"],
        "properties": {
            "sha": _STR,
            "author": _STR,
            "coauthors": _STRS,
            "message": _STR,
            "time": {"type": "string", "format": "date-time"},
            "files": _STRS,
        },
    },
    "History": {
        "type": "object",
        "required": ["commits"],
        "properties": {"commits": {"type": "array", "items": _ref("Commit")}},
    },
    "FileAtCommit": {
        "type": "object",
        "required": ["path", "commit", "content"],
        "properties": {"path": _STR, "commit": _STR, "content": _STR},
    },
    "Diff": {
        "type": "object",
        "required": ["path", "commit", "diff"],
        "properties": {"path": _STR, "commit": _STR, "diff": _STR},
    },
    "Restore": {
        "type": "object",
        "required": ["commit"],
        "properties": {"commit": _STR, "path": {"type": ["string", "null"]}},
    },
    "Restored": {
        "type": "object",
        "required": ["commit", "restored"],
        "properties": {"commit": _STR, "restored": _STRS},
    },
    "WhoAmI": {
        "type": "object",
        "required": ["user", "sessions", "readonly", "authRequired"],
        "properties": {
            "user": {"type": ["string", "null"]},
            "sessions": {"oneOf": [{"const": "*"}, _STRS]},
            "readonly": {"oneOf": [{"type": "boolean"}, _STRS]},
            "authRequired": {"type": "boolean"},
        },
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "collab HTTP API",
        "version": "1",
        "description": (
            "Files, history and restore of collaborative sessions. Writes are CRDT edits of "
            "the live documents and are answered once stored. With AUTH_SECRET, send the "
            "client JWT as 'Authorization: Bearer'."
        ),
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
    },
    "security": [{"bearer": []}, {}],
    "paths": {
        "/api/whoami": {
            "get": _op("What the token allows", _ref("WhoAmI"), ("401",)),
        },
        "/api/sessions": {
            "get": _op("Recent sessions, newest first", _ref("Sessions"), ("401", "503")),
            "post": _op(
                "Create a session (with git history)",
                _ref("Created"),
                ("400", "401", "403", "409", "503"),
                body="NewSession",
                status="201",
            ),
        },
        "/api/sessions/{session}/files": {
            "parameters": [SESSION],
            "get": _op("The session's files", _ref("Files"), _READ),
        },
        "/api/sessions/{session}/files/{path}": {
            "parameters": [SESSION, PATH],
            "get": _op("A file's current content", _ref("FileContent"), (*_READ, "404")),
            "put": _op(
                "Create or replace a file (a CRDT edit against the current text)",
                _ref("Written"),
                _WRITE,
                body="NewContent",
            ),
            "delete": _op("Delete a file", _ref("Deleted"), (*_WRITE, "404")),
        },
        "/api/sessions/{session}/rename": {
            "parameters": [SESSION],
            "post": _op("Rename a file", _ref("Rename"), (*_WRITE, "404"), body="Rename"),
        },
        "/api/sessions/{session}/commit": {
            "parameters": [SESSION],
            "post": _op("Commit the session now", _ref("Committed"), _WRITE),
        },
        "/api/sessions/{session}/history": {
            "parameters": [SESSION],
            "get": _op("The session's commits, newest first", _ref("History"), _READ),
        },
        "/api/sessions/{session}/history/{sha}/files/{path}": {
            "parameters": [SESSION, SHA, PATH],
            "get": _op("A file at a commit", _ref("FileAtCommit"), (*_READ, "404", "409")),
        },
        "/api/sessions/{session}/history/{sha}/diff/{path}": {
            "parameters": [SESSION, SHA, PATH],
            "get": _op(
                "A file's changes from a commit to now", _ref("Diff"), (*_READ, "404", "409")
            ),
        },
        "/api/sessions/{session}/restore": {
            "parameters": [SESSION],
            "post": _op(
                "Restore a file, or every file, to a commit (as CRDT edits)",
                _ref("Restored"),
                (*_WRITE, "404"),
                body="Restore",
            ),
        },
    },
}
