"""Git history in storage: packs first, ref last, and concurrent committers lose nothing."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from worker.git_branch import StaleOwner, commit_session, sync_packs
from worker.git_objects import Person
from worker.storage import SessionStore, StorageUnavailable, Store

ALICE, BOB = Person.for_user("alice"), Person.for_user("bob")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


async def checked_out(store: SessionStore, session: str, where: Path) -> Path:
    """A fresh repository rebuilt from storage alone, with the branch at the stored ref."""
    await sync_packs(store, session, where)
    ref = await store.read_ref(session)
    assert ref is not None
    git(where, "update-ref", "refs/heads/main", ref[0])
    git(where, "symbolic-ref", "HEAD", "refs/heads/main")
    git(where, "fsck", "--strict")
    return where


class RaceAtSwap:
    """The real store, except that the first two ref swaps wait for each other."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.barrier = asyncio.Barrier(2)
        self.swaps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        self.swaps += 1
        if self.swaps <= 2:
            await asyncio.wait_for(self.barrier.wait(), 10)
        return await self.inner.put_if(key, data, version)


class DiesAtSwap:
    """The real store, except that moving a ref fails as if the process died right there."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        raise StorageUnavailable("put_if", key, ConnectionResetError("killed"))


class TestGitHistory:
    async def test_commits_continue_on_top_of_the_stored_history(
        self, store: Store, tmp_path: Path
    ) -> None:
        sessions = SessionStore(store, "w-a")
        first = await commit_session(sessions, "s", tmp_path / "a.git", {"a.txt": b"1"}, ALICE)
        assert first.sha is not None and not first.merged
        unchanged = await commit_session(sessions, "s", tmp_path / "a.git", {"a.txt": b"1"}, BOB)
        assert unchanged.sha is None
        # Another worker, with an empty local cache, continues the same branch.
        other = SessionStore(store, "w-b")
        second = await commit_session(other, "s", tmp_path / "b.git", {"a.txt": b"2"}, BOB)
        assert second.sha is not None
        repo = await checked_out(sessions, "s", tmp_path / "check.git")
        assert git(repo, "log", "--format=%H").split() == [second.sha, first.sha]
        assert git(repo, "show", "HEAD:a.txt") == "2"

    async def test_two_committers_from_one_base_both_end_up_in_history(
        self, store: Store, tmp_path: Path
    ) -> None:
        base_store = SessionStore(store, "w-0")
        base = await commit_session(base_store, "s", tmp_path / "0.git", {"a": b"base"}, ALICE)
        assert base.sha is not None
        # Both committers read the same ref before either swaps it: a real race, every time.
        racing = RaceAtSwap(store)
        one, two = SessionStore(racing, "w-1"), SessionStore(racing, "w-2")
        results = await asyncio.gather(
            commit_session(one, "s", tmp_path / "1.git", {"a": b"one", "x": b"1"}, ALICE),
            commit_session(two, "s", tmp_path / "2.git", {"a": b"two", "y": b"2"}, BOB),
        )
        assert sorted(r.merged for r in results) == [False, True]
        winner = next(r for r in results if not r.merged)
        merge = next(r for r in results if r.merged)
        repo = await checked_out(base_store, "s", tmp_path / "check.git")
        history = git(repo, "log", "--format=%H").split()
        assert history[0] == merge.sha
        parents = git(repo, "show", "-s", "--format=%P", "HEAD").split()
        assert parents[0] == winner.sha and len(parents) == 2  # the loser's own commit
        assert {base.sha, winner.sha, parents[1]} <= set(history)
        # The merge's tree is the merging committer's live state (CRDT-merged already).
        expected = ["a", "x"] if results[0].merged else ["a", "y"]
        assert sorted(git(repo, "ls-tree", "--name-only", "HEAD").split()) == expected

    async def test_a_corrupt_ref_is_reported_not_overwritten(
        self, store: Store, tmp_path: Path
    ) -> None:
        sessions = SessionStore(store, "w-a")
        await store.put("sessions/s/git/refs/heads/main", b"not a sha\n")
        with pytest.raises(Exception, match="not a commit id"):
            await commit_session(sessions, "s", tmp_path / "a.git", {"a": b"1"}, ALICE)
        assert await store.get("sessions/s/git/refs/heads/main") == b"not a sha\n"

    async def test_a_commit_cut_off_before_its_ref_moved_is_not_on_the_branch(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Objects first, ref last: dying between the two leaves only an unreferenced pack."""
        sessions = SessionStore(store, "w-a")
        first = await commit_session(sessions, "s", tmp_path / "a.git", {"a": b"1"}, ALICE)
        cut = SessionStore(DiesAtSwap(store), "w-b")
        with pytest.raises(StorageUnavailable):
            await commit_session(cut, "s", tmp_path / "b.git", {"a": b"2"}, BOB)
        assert (await sessions.read_ref("s") or ("",))[0] == first.sha
        later = await commit_session(sessions, "s", tmp_path / "a.git", {"a": b"3"}, ALICE)
        repo = await checked_out(sessions, "s", tmp_path / "check.git")
        assert git(repo, "log", "--format=%H").split() == [later.sha, first.sha]


class TestFencing:
    """The ref carries the epoch of the owner that moved it (worker/ownership.py)."""

    async def test_a_deposed_owner_cannot_move_the_branch_past_its_successor(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Owner A (epoch 1) was taken over by B (epoch 2), who committed: A is refused, and
        the branch stays B's commit, with A's stale tree nowhere on it."""
        a, b = SessionStore(store, "w-a"), SessionStore(store, "w-b")
        await commit_session(a, "s", tmp_path / "a", {"f.txt": b"one\n"}, ALICE, epoch=1)
        second = await commit_session(
            b, "s", tmp_path / "b", {"f.txt": b"one\ntwo\n"}, BOB, epoch=2
        )
        with pytest.raises(StaleOwner):
            await commit_session(a, "s", tmp_path / "a", {"f.txt": b"stale\n"}, ALICE, epoch=1)
        ref = await a.read_ref("s")
        assert ref is not None and (ref.sha, ref.epoch) == (second.sha, 2)
        repo = await checked_out(a, "s", tmp_path / "check")
        assert "stale" not in git(repo, "log", "-p", "main")

    async def test_a_committer_that_stopped_owning_mid_commit_leaves_the_branch(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Its lease ran out while dulwich worked: the objects may be stored, the ref is not
        moved."""
        sessions = SessionStore(store, "w-a")
        first = await commit_session(sessions, "s", tmp_path / "a", {"f": b"1"}, ALICE, epoch=3)
        with pytest.raises(StaleOwner):
            await commit_session(
                sessions,
                "s",
                tmp_path / "a",
                {"f": b"2"},
                ALICE,
                epoch=3,
                still_owner=lambda: False,
            )
        ref = await sessions.read_ref("s")
        assert ref is not None and (ref.sha, ref.epoch) == (first.sha, 3)

    async def test_refs_written_before_epochs_read_as_epoch_zero(self, store: Store) -> None:
        await store.put("sessions/s/git/refs/heads/main", b"a" * 40 + b"\n")
        ref = await SessionStore(store, "w").read_ref("s")
        assert ref is not None and (ref.sha, ref.epoch) == ("a" * 40, 0)
