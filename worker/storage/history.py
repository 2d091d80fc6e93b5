"""What ``SessionStore`` keeps besides documents: binary files and the git history.

Binary files are content-addressed, immutable blobs. Git objects are immutable packs (objects
first); the branch ref is the one mutable object, moved only by compare-and-swap (ref last), so
a commit is in storage whole or not at all, and a committer that lost a race sees it and merges
instead of overwriting (``worker.commits``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from .base import CorruptObject, Store

BLOBS = "blobs/"
GIT_PACKS = "git/packs/"
GIT_REFS = "git/refs/heads/"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value) or ".." in value:
        raise ValueError(f"invalid {what} {value!r}")
    return value


class _Keys(Protocol):
    """What the mixin needs from ``SessionStore``: the store, keys, unique object names."""

    @property
    def store(self) -> Store: ...

    def _key(self, session_id: str, part: str) -> str: ...

    def _object_name(self, suffix: str) -> str: ...


class SessionHistory:
    """Mixed into ``SessionStore``."""

    # -- binary files: byte-exact, content-addressed; the index document lists them --------

    async def put_blob(self: _Keys, session_id: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        await self.store.put(self._key(session_id, BLOBS + digest), data)
        return digest

    async def get_blob(self: _Keys, session_id: str, digest: str) -> bytes:
        key = self._key(session_id, BLOBS + _checked(digest, _SHA256, "blob id"))
        data = await self.store.get(key)
        if data is None:
            raise CorruptObject(key, "a listed binary file's blob is missing")
        return data

    # -- git history -----------------------------------------------------------------------
    # Packs are immutable objects (objects first); the branch ref is the one mutable object,
    # moved only by compare-and-swap (ref last), so a commit is in storage whole or not at all
    # and a committer that lost a race sees it and merges instead of overwriting.

    async def append_pack(self: _Keys, session_id: str, pack: bytes) -> str:
        key = self._key(session_id, GIT_PACKS + self._object_name(".pack"))
        await self.store.put(key, pack)
        return key

    async def list_packs(self: _Keys, session_id: str) -> list[str]:
        keys = await self.store.list(self._key(session_id, GIT_PACKS))
        return [k for k in keys if k.endswith(".pack")]

    async def get_pack(self: _Keys, key: str) -> bytes:
        data = await self.store.get(key)
        if data is None:
            raise CorruptObject(key, "a listed git pack vanished; packs are never deleted")
        return data

    async def read_ref(
        self: _Keys, session_id: str, branch: str = "main"
    ) -> tuple[str, str] | None:
        """(commit id, version) of the branch, or None before the first commit."""
        key = self._key(session_id, GIT_REFS + _checked(branch, _BRANCH, "branch"))
        found = await self.store.get_versioned(key)
        if found is None:
            return None
        sha = found[0].decode("ascii", "replace").strip()
        if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
            raise CorruptObject(key, f"not a commit id: {sha[:60]!r}")
        return sha, found[1]

    async def swap_ref(
        self: _Keys, session_id: str, sha: str, version: str | None, branch: str = "main"
    ) -> bool:
        key = self._key(session_id, GIT_REFS + _checked(branch, _BRANCH, "branch"))
        return await self.store.put_if(key, sha.encode() + b"\n", version)
