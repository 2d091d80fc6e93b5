"""Placement is a pure function of the session id and the set of worker names."""

from __future__ import annotations

import random
from collections import Counter

from router import ring

SESSIONS = [f"session-{i}" for i in range(10_000)]


def moved_sessions(sessions: list[str], before: list[str], after: list[str]) -> dict[str, str]:
    """Sessions whose owner differs between two memberships, mapped to their new owner."""
    return {
        s: new
        for s in sessions
        if (new := ring.owner(s, after)) is not None and new != ring.owner(s, before)
    }


class TestRing:
    def test_the_owner_does_not_depend_on_the_order_workers_are_listed_in(self) -> None:
        workers = [f"w-{i}" for i in range(7)]
        shuffled = workers[:]
        for session in SESSIONS[:500]:
            random.shuffle(shuffled)
            assert ring.owner(session, shuffled) == ring.owner(session, workers)

    def test_no_workers_means_no_owner(self) -> None:
        assert ring.owner("s", []) is None

    def test_sessions_spread_evenly(self) -> None:
        workers = [f"w-{i}" for i in range(5)]
        counts = Counter(ring.owner(s, workers) for s in SESSIONS)
        assert set(counts) == set(workers)
        mean = len(SESSIONS) / len(workers)
        assert all(abs(n - mean) < 0.1 * mean for n in counts.values()), counts

    def test_adding_one_worker_to_n_moves_about_one_in_n_plus_one_and_only_to_it(self) -> None:
        for n in (1, 3, 9):
            before = [f"w-{i}" for i in range(n)]
            after = [*before, "w-new"]
            moved = moved_sessions(SESSIONS, before, after)
            assert set(moved.values()) == {"w-new"}
            expected = len(SESSIONS) / (n + 1)
            assert abs(len(moved) - expected) < 0.1 * expected, (n, len(moved))

    def test_removing_a_worker_moves_only_its_sessions(self) -> None:
        before = [f"w-{i}" for i in range(4)]
        after = ["w-0", "w-1", "w-3"]
        moved = moved_sessions(SESSIONS, before, after)
        assert moved
        assert all(ring.owner(s, before) == "w-2" for s in moved)
        owned = sum(1 for s in SESSIONS if ring.owner(s, before) == "w-2")
        assert len(moved) == owned
