"""Group commit merges a session's pending updates per document in rounds, not all at once."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import Doc, Text, merge_updates

from worker.flusher import merge_many


def edits(count: int, seed: int = 7) -> list[bytes]:
    """``count`` real updates of one text: inserts anywhere, every fifth a deletion."""
    rng = random.Random(seed)
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    out = []
    for i in range(count):
        before = doc.get_state()
        if i % 5 == 4 and len(text) > 3:
            del text[rng.randrange(len(text) - 2)]
        else:
            text.insert(rng.randrange(len(text) + 1), rng.choice("abc"))
        out.append(doc.get_update(before))
    return out


def replica(update: bytes) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return doc


class TestMergeMany:
    @pytest.mark.parametrize("count", [1, 2, 31, 32, 33, 64, 65, 1000])
    def test_gives_what_one_merge_of_them_all_gives(self, count: int) -> None:
        """Same text, same state vector, whatever the number against the fan-in."""
        updates = edits(count)
        merged = merge_many(updates)
        expected = replica(updates[0] if count == 1 else merge_updates(*updates))
        got = replica(merged)
        assert str(got.get("content", type=Text)) == str(expected.get("content", type=Text))
        assert got.get_state() == expected.get_state()
