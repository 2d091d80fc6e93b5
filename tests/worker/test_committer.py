"""Commits and packs made with dulwich, checked with the real `git` command line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dulwich.repo import Repo

from worker.git_objects import CommitterError, Person, add_pack, commit, message, open_repo

ALICE, BOB, CAROL = Person.for_user("alice"), Person.for_user("bob"), Person.for_user("carol")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


Repos = Callable[[Path], Repo]


@pytest.fixture
def repos() -> Iterator[Repos]:
    """Opens repositories and closes them after the test (dulwich warns about open packs)."""
    opened: list[Repo] = []

    def open_(path: Path) -> Repo:
        opened.append(open_repo(path))
        return opened[-1]

    yield open_
    for repo in opened:
        repo.close()


def set_main(repo: Path, sha: str) -> None:
    git(repo, "update-ref", "refs/heads/main", sha)
    git(repo, "symbolic-ref", "HEAD", "refs/heads/main")


class TestMessage:
    def test_the_seeds_format_with_trailers(self) -> None:
        text = message("alice", ["a", "b", "c", "d", "e", "f", "g"], [BOB, CAROL])
        assert text == (
            "Auto-commit by user alice\n\nChanges: a, b, c, d, e and 2 more\n\n"
            "Co-authored-by: bob <bob@users.collab.invalid>\n"
            "Co-authored-by: carol <carol@users.collab.invalid>\n"
        )

    def test_few_changes_are_all_listed(self) -> None:
        assert message("bob", ["x.py"]) == "Auto-commit by user bob\n\nChanges: x.py\n"


class TestCommit:
    def test_a_commit_git_can_read_and_verify(self, tmp_path: Path, repos: Repos) -> None:
        repo_path = tmp_path / "repo.git"
        repo = repos(repo_path)
        files = {
            "README.md": b"# hi\n",
            "src/app.py": b"print('hi')\n",
            ".collaboration/state.json": b"{}",
            "img/logo.png": bytes(range(256)) * 4,
        }
        result = commit(repo, [], files, ALICE, [BOB], when=1_700_000_000)
        assert result is not None
        set_main(repo_path, result.sha)
        git(repo_path, "fsck", "--strict")
        log = git(repo_path, "log", "--format=%an <%ae>%n%B")
        assert log.startswith("alice <alice@users.collab.invalid>\nAuto-commit by user alice")
        assert "Co-authored-by: bob <bob@users.collab.invalid>" in log
        listed = git(repo_path, "ls-tree", "-r", "--name-only", "HEAD").split()
        assert listed == ["README.md", "img/logo.png", "src/app.py"]  # no .collaboration
        blob = subprocess.run(
            ["git", "-C", str(repo_path), "show", "HEAD:img/logo.png"], capture_output=True
        ).stdout
        assert blob == files["img/logo.png"]
        assert result.changed == ("README.md", "img/logo.png", "src/app.py")

    def test_an_unchanged_tree_is_not_committed(self, tmp_path: Path, repos: Repos) -> None:
        repo = repos(tmp_path / "r.git")
        first = commit(repo, [], {"a": b"1"}, ALICE)
        assert first is not None
        assert commit(repo, [first.sha], {"a": b"1", ".collaboration/x": b"y"}, BOB) is None

    def test_deletes_and_renames_are_committed_as_such(self, tmp_path: Path, repos: Repos) -> None:
        path = tmp_path / "r.git"
        repo = repos(path)
        first = commit(repo, [], {"old.py": b"x = 1\n" * 20, "gone.txt": b"bye"}, ALICE)
        assert first is not None
        second = commit(repo, [first.sha], {"new.py": b"x = 1\n" * 20}, BOB)
        assert second is not None
        set_main(path, second.sha)
        status = git(path, "show", "-M", "--name-status", "--format=", "HEAD").split("\n")
        assert "D\tgone.txt" in status
        assert any(line.startswith("R100\told.py\tnew.py") for line in status)
        assert "Changes: gone.txt, new.py, old.py" in git(path, "log", "-1", "--format=%B")

    def test_a_merge_keeps_both_histories(self, tmp_path: Path, repos: Repos) -> None:
        path = tmp_path / "r.git"
        repo = repos(path)
        base = commit(repo, [], {"a": b"base"}, ALICE)
        assert base is not None
        ours = commit(repo, [base.sha], {"a": b"ours"}, ALICE)
        theirs = commit(repo, [base.sha], {"a": b"theirs"}, BOB)
        assert ours is not None and theirs is not None
        merged = commit(repo, [theirs.sha, ours.sha], {"a": b"merged"}, ALICE)
        assert merged is not None
        set_main(path, merged.sha)
        history = git(path, "log", "--format=%H").split()
        assert {base.sha, ours.sha, theirs.sha, merged.sha} <= set(history)
        assert git(path, "show", "-s", "--format=%P", "HEAD").split() == [theirs.sha, ours.sha]

    def test_packs_rebuild_the_history_in_an_empty_repository(
        self, tmp_path: Path, repos: Repos
    ) -> None:
        source = repos(tmp_path / "a.git")
        packs, parents = [], []
        for i in range(3):
            result = commit(
                source, parents, {f"f{j}.txt": f"{i}-{j}".encode() for j in range(i + 1)}, ALICE
            )
            assert result is not None
            packs.append(result.pack)
            parents = [result.sha]
        target_path = tmp_path / "b.git"
        target = repos(target_path)
        for pack in reversed(packs):  # any order: each pack is self-contained
            add_pack(target, pack)
        set_main(target_path, parents[0])
        git(target_path, "fsck", "--strict")
        assert len(git(target_path, "log", "--format=%H").split()) == 3

    def test_a_path_that_is_both_file_and_directory_is_refused(
        self, tmp_path: Path, repos: Repos
    ) -> None:
        repo = repos(tmp_path / "r.git")
        with pytest.raises(CommitterError, match=r"both a file and a directory|to be a directory"):
            commit(repo, [], {"a": b"1", "a/b": b"2"}, ALICE)
