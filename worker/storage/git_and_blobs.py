"""What ``SessionStore`` keeps besides documents: binary files and the git history.

Binary files are content-addressed, immutable blobs. Git objects are immutable packs (objects
first); the branch ref is the one mutable object, moved only by compare-and-swap (ref last), so
a commit is in storage whole or not at all, and a committer that lost a race sees it and merges
instead of overwriting (``worker.git_branch``).
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple, Protocol

from .base import CorruptObject, Store

BLOBS = "blobs/"
GIT_PACKS = "git/packs/"
GIT_REFS = "git/refs/heads/"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class BranchRef(NamedTuple):
    """A branch head: the commit, the object's version (for ``swap_ref``), and the ownership
    epoch of the worker that moved it there (0: an import or a commit from before epochs).

    The epoch is a fencing value: a worker that was deposed (its lease ran out and another took
    the session over, with a higher epoch) finds the ref moved by a later owner and refuses to
    commit, instead of merging its stale tree over the rightful owner's history.
    """

    sha: str
    version: str
    epoch: int


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

    async def read_ref(self: _Keys, session_id: str, branch: str = "main") -> BranchRef | None:
        """The branch head, or None before the first commit.

        The object is ``<sha>\n`` and, when a live owner moved it, ``epoch <n>\n``.
        """
        key = self._key(session_id, GIT_REFS + _checked(branch, _BRANCH, "branch"))
        found = await self.store.get_versioned(key)
        if found is None:
            return None
        lines = found[0].decode("ascii", "replace").split("\n")
        sha = lines[0].strip()
        if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
            raise CorruptObject(key, f"not a commit id: {sha[:60]!r}")
        epoch = 0
        for line in lines[1:]:
            name, _, value = line.strip().partition(" ")
            if name == "epoch":
                if not value.isdigit():
                    raise CorruptObject(key, f"bad epoch line {line[:60]!r}")
                epoch = int(value)
        return BranchRef(sha, found[1], epoch)

    async def swap_ref(
        self: _Keys,
        session_id: str,
        sha: str,
        version: str | None,
        branch: str = "main",
        *,
        epoch: int = 0,
    ) -> bool:
        """Moves the branch to ``sha`` if it is still at ``version``; False if it moved."""
        key = self._key(session_id, GIT_REFS + _checked(branch, _BRANCH, "branch"))
        data = sha.encode() + b"\n" + (f"epoch {epoch}\n".encode() if epoch else b"")
        return await self.store.put_if(key, data, version) is not None
