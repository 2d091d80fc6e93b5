"""Commit a session's files to its git history in storage, safely against concurrent committers.

Objects first, ref last: the commit's new objects go to storage as one immutable pack, then the
branch ref moves by compare-and-swap. A committer that finds the ref moved under it fetches the
new history and commits a merge of both heads (its tree is the live, already CRDT-merged state),
so no commit ever drops out of the branch. dulwich work runs in a thread (``worker.git_objects``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from . import git_objects
from .git_objects import Person
from .storage import SessionStore

log = structlog.get_logger("worker.git_branch")

MAX_ATTEMPTS = 8
_SYNCED = "collab-synced-packs"


@dataclass(frozen=True)
class CommitOutcome:
    sha: str | None  # None: nothing changed since the branch head
    merged: bool = False
    attempts: int = 1
    changed: tuple[str, ...] = ()


class CommitConflict(RuntimeError):
    """The ref kept moving for MAX_ATTEMPTS rounds; nothing was lost, retry later."""


class StaleOwner(CommitConflict):
    """This worker no longer owns the session (its lease ran out, or a later owner moved the
    branch): its tree may miss the new owner's edits, so it must not become the branch head."""


async def sync_packs(store: SessionStore, session_id: str, repo_dir: Path) -> None:
    """Adds every pack in storage that the local repository has not seen yet."""
    marker = repo_dir / _SYNCED

    def seen() -> set[str]:
        return set(marker.read_text().split()) if marker.exists() else set()

    known = await anyio.to_thread.run_sync(seen)
    missing = [k for k in await store.list_packs(session_id) if k not in known]
    if not missing:
        return
    packs = [(key, await store.get_pack(key)) for key in missing]

    def add() -> None:
        repo = git_objects.open_repo(repo_dir)
        try:
            for _, data in packs:
                git_objects.add_pack(repo, data)
        finally:
            repo.close()
        with open(marker, "a") as out:
            out.write("".join(f"{key}\n" for key, _ in packs))

    await anyio.to_thread.run_sync(add)


async def commit_session(
    store: SessionStore,
    session_id: str,
    repo_dir: Path,
    files: Mapping[str, bytes],
    author: Person,
    coauthors: Iterable[Person] = (),
    *,
    epoch: int = 0,
    still_owner: Callable[[], bool] = lambda: True,
) -> CommitOutcome:
    """Commits ``files`` on top of the branch (a merge when the branch moved meanwhile).

    ``epoch`` is the committer's ownership epoch (0: not a live owner, e.g. an import). A branch
    already moved by a later epoch, or a committer that stopped owning the session before it
    could move the branch (``still_owner``), raises StaleOwner: the commit's objects may be in
    storage, but the branch stays the rightful owner's.
    """
    coauthors = tuple(coauthors)
    ours: str | None = None  # a commit of ours already in storage, not yet on the branch
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await sync_packs(store, session_id, repo_dir)
        ref = await store.read_ref(session_id)
        head, version = (ref.sha, ref.version) if ref is not None else (None, None)
        if ref is not None and ref.epoch > epoch:
            raise StaleOwner(
                f"branch of {session_id} was moved by a later owner (epoch {ref.epoch} > {epoch})"
            )
        parents = [p for p in (head, ours) if p is not None]

        def make(parents: list[str] = parents) -> git_objects.CommitResult | None:
            repo = git_objects.open_repo(repo_dir)
            try:
                return git_objects.commit(repo, parents, files, author, coauthors)
            finally:
                repo.close()

        result = await anyio.to_thread.run_sync(make)
        if result is None:
            return CommitOutcome(None, attempts=attempt)
        key = await store.append_pack(session_id, result.pack)
        await anyio.to_thread.run_sync(_remember, repo_dir, key)
        if not still_owner():
            raise StaleOwner(f"this worker stopped owning {session_id} while committing")
        if await store.swap_ref(session_id, result.sha, version, epoch=epoch):
            merged = len(parents) > 1
            log.info(
                "committed",
                session=session_id,
                commit=result.sha,
                merged=merged,
                attempts=attempt,
                changed=len(result.changed),
            )
            return CommitOutcome(result.sha, merged, attempt, result.changed)
        ours = result.sha  # lost the race: merge it with whatever won, next round
    raise CommitConflict(f"branch of {session_id} kept moving for {MAX_ATTEMPTS} attempts")


def _remember(repo_dir: Path, key: str) -> None:
    with open(repo_dir / _SYNCED, "a") as out:
        out.write(key + "\n")
