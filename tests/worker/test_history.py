"""The history's diffs are real unified diffs: git applies them to get from then to now."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from worker.git_history import unified_diff

SHA = "0123456789abcdef0123456789abcdef01234567"

CASES = [
    ("old\n", "new\n"),
    ("old", "new"),  # neither ends with a newline
    ("a\nold", "a\nold\n"),  # only the newline changes
    ("a\nb\n", "a\nb"),
    ("one\ntwo\nthree\n", "one\n2\nthree\nfour\n"),
    (None, "added\n"),
    ("removed\n", None),
]


class TestUnifiedDiff:
    @pytest.mark.parametrize(("old", "new"), CASES)
    def test_git_apply_turns_then_into_now(
        self, tmp_path: Path, old: str | None, new: str | None
    ) -> None:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        target = tmp_path / "a.txt"
        if old is not None:
            target.write_text(old)
        patch = tmp_path / "p.diff"
        patch.write_text(unified_diff("a.txt", SHA, old, new))
        subprocess.run(["git", "-C", str(tmp_path), "apply", str(patch)], check=True)
        assert (target.read_text() if target.exists() else None) == new

    def test_an_unchanged_file_has_an_empty_diff(self) -> None:
        assert unified_diff("a.txt", SHA, "same\n", "same\n") == ""
