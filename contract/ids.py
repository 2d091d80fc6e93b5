"""Names that become storage keys and ring members: session ids and worker ids.

One rule for session ids everywhere (URLs, the JSON join, storage keys, the CLI), so a session id
accepted at the edge can never escape ``sessions/{id}/`` in storage; one rule for worker ids
(``WORKER_ID``), which name storage objects and ring members.
"""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_WORKER_ID = 64


def is_name(value: object) -> bool:
    """True for 1-128 characters of ``A-Z a-z 0-9 . _ -``, starting alphanumeric, no ``..``."""
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value)) and ".." not in value


def validate_name(value: str, what: str) -> str:
    if not is_name(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-128 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, without '..'"
        )
    return value


def validate_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is safe as one path/key component, else raise ``ValueError``."""
    return validate_name(session_id, "session id")


def valid_worker_id(value: str) -> bool:
    """``WORKER_ID``: 1-64 letters, digits, ``.``, ``_``, ``-``."""
    return 0 < len(value) <= MAX_WORKER_ID and all(c.isalnum() or c in "._-" for c in value)
