"""Reading a session's git history for people: commits, a file at a commit, a diff against now.

The history lives in storage (packs and the branch ref, ``worker.git_branch``); reading it first
adds any pack the local cache under WORKSPACE_DIR has not seen, then walks it with dulwich in a
thread (``worker.git_objects``). Restoring is not done here: it is a CRDT edit of the live
documents (``worker.endpoints.http_api``), never a re-seed of a document from text.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import anyio.to_thread

from . import git_objects
from .git_branch import sync_packs
from .git_objects import CommitInfo
from .storage import SessionStore


class NoSuchCommit(LookupError):
    """The commit is not in the session's history."""


async def _synced_repo(store: SessionStore, session_id: str, repo_dir: Path) -> Path:
    await sync_packs(store, session_id, repo_dir)
    return repo_dir


async def commits(
    store: SessionStore, session_id: str, repo_dir: Path, limit: int = 100
) -> list[CommitInfo]:
    """Newest first; empty before the first commit."""
    ref = await store.read_ref(session_id)
    if ref is None:
        return []
    await _synced_repo(store, session_id, repo_dir)

    def walk() -> list[CommitInfo]:
        repo = git_objects.open_repo(repo_dir)
        try:
            return git_objects.log(repo, ref.sha, limit)
        finally:
            repo.close()

    return await anyio.to_thread.run_sync(walk)


async def files_at(
    store: SessionStore, session_id: str, repo_dir: Path, sha: str
) -> dict[str, bytes]:
    """Every file of commit ``sha``; NoSuchCommit if the history has no such commit."""
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        raise NoSuchCommit(sha)
    await _synced_repo(store, session_id, repo_dir)

    def read() -> dict[str, bytes]:
        repo = git_objects.open_repo(repo_dir)
        try:
            return git_objects.files_at(repo, sha)
        except KeyError:
            raise NoSuchCommit(sha) from None
        finally:
            repo.close()

    return await anyio.to_thread.run_sync(read)


def unified_diff(path: str, sha: str, old: str | None, new: str | None) -> str:
    """``path`` from commit ``sha`` to now, as a unified diff (empty when unchanged)."""
    lines = difflib.unified_diff(
        _lines(old),
        _lines(new),
        fromfile=f"a/{path}" if old is not None else "/dev/null",
        tofile=f"b/{path}" if new is not None else "/dev/null",
        fromfiledate=sha[:12],
        tofiledate="now",
    )
    out = []
    for line in lines:
        if line.endswith(_NO_NEWLINE):  # git's marker, on a line of its own
            out.append(line[: -len(_NO_NEWLINE)] + "\n\\ No newline at end of file\n")
        else:
            out.append(line)
    return "".join(out)


_NO_NEWLINE = "\x00<no-newline>"


def _lines(text: str | None) -> list[str]:
    """Lines with their endings; a last line without one is marked, as git marks it."""
    lines = (text or "").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += _NO_NEWLINE
    return lines
