"""Workspace path rules: what a client may name, checked once before anything is touched.

A path is a workspace-relative POSIX path. Anything that could escape the work tree or reach
git's or our own bookkeeping is refused with a reason the client can act on.
"""

from __future__ import annotations

MAX_PATH_CHARS = 1024
_RESERVED_TOP = (".git", ".collaboration")


class PathRefused(ValueError):
    """The path is not a safe workspace-relative file path; ``str()`` says why."""


def check_path(raw: object) -> str:
    """Returns the normalized path or raises PathRefused."""
    if not isinstance(raw, str) or not raw:
        raise PathRefused("path must be a non-empty string")
    if len(raw) > MAX_PATH_CHARS:
        raise PathRefused(f"path is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in raw:
        raise PathRefused("path contains a NUL byte")
    if "\\" in raw:
        raise PathRefused("path contains a backslash; use '/' separators")
    if raw.startswith("/"):
        raise PathRefused("path must be relative to the workspace, not absolute")
    if any(ord(c) < 0x20 for c in raw):
        raise PathRefused("path contains a control character")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts:
        raise PathRefused("path names no file")
    if ".." in parts:
        raise PathRefused("path contains '..'")
    if parts[0] in _RESERVED_TOP:
        raise PathRefused(f"{parts[0]}/ is reserved and cannot be edited by clients")
    if raw.endswith("/"):
        raise PathRefused("path names a directory, not a file")
    return "/".join(parts)


def check_prefix(raw: object) -> str:
    """A directory prefix for listings: '' (everything) or a checked path."""
    if raw is None or raw == "" or raw == "/" or raw == ".":
        return ""
    if not isinstance(raw, str):
        raise PathRefused("path must be a string")
    return check_path(raw.rstrip("/"))
