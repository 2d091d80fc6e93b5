"""The decision engine both platforms share (`ops.scaling_policy`), as pure functions: the buffer,
min/max, the flap-free scale-down, the choice of victims and the rollout steps. `collab
autoscale`'s own rule tests (tests/ops/test_autoscale.py) run on the same engine."""

from __future__ import annotations

import pytest

from ops.scaling_policy import NO_BUFFER, Autoscaler, Buffer, Member, Policy, plan, victims
from ops.swarm_autoscaler import members_of


def policy(buffer: Buffer = NO_BUFFER, delay: float = 60) -> Policy:
    return Policy(target=10, minimum=2, maximum=8, scale_down_delay_s=delay, buffer=buffer)


class TestBuffer:
    @pytest.mark.parametrize(
        ("buffer", "sessions", "need"),
        [
            (Buffer(), 41, 5),
            (Buffer(5, unit="sessions"), 41, 5),  # 46 sessions' worth
            (Buffer(10, unit="sessions"), 41, 6),  # 51
            (Buffer(25, percent=True, unit="sessions"), 40, 5),  # 40 + 10
            (Buffer(25, percent=True, unit="sessions"), 41, 6),  # 41 + ceil(10.25)
            (Buffer(1, unit="workers"), 41, 6),
            (Buffer(50, percent=True, unit="workers"), 41, 8),  # 5 + ceil(2.5)
            (Buffer(1, unit="workers"), 0, 2),  # an idle pool keeps its minimum
            (Buffer(3, unit="workers"), 0, 3),  # ... or the buffer, when that is more
        ],
    )
    def test_the_buffer_adds_spare_capacity(self, buffer: Buffer, sessions: int, need: int) -> None:
        assert policy(buffer).need(sessions) == need

    def test_the_buffer_never_goes_past_the_maximum(self) -> None:
        assert policy(Buffer(100, percent=True, unit="workers")).need(60) == 8

    @pytest.mark.parametrize(
        ("text", "parsed"),
        [("5", Buffer(5)), (5, Buffer(5)), ("20%", Buffer(20, percent=True)), (" 0 ", Buffer())],
    )
    def test_it_parses_numbers_and_percentages(self, text: str | int, parsed: Buffer) -> None:
        assert Buffer.parse(text, "sessions") == parsed

    @pytest.mark.parametrize("text", ["-1", "1.5", "20 %", "lots", "%"])
    def test_it_refuses_anything_else(self, text: str) -> None:
        with pytest.raises(ValueError, match="whole number or a percentage"):
            Buffer.parse(text, "workers")

    def test_the_reason_names_the_buffer(self) -> None:
        d = Autoscaler(policy(Buffer(20, True, "sessions"))).decide(0, current=2, sessions=41)
        assert (d.action, d.desired) == ("scale up", 5)
        assert d.reason == "41 sessions + buffer 20% sessions / 10 per worker needs 5"


class TestFlapFree:
    def test_a_restarted_autoscaler_waits_a_whole_window_before_scaling_down(self) -> None:
        first = Autoscaler(policy(delay=60))
        assert first.decide(0, current=6, sessions=0).action == "hold"
        again = Autoscaler(policy(delay=60))  # the operator restarted at t=100
        assert again.decide(100, current=6, sessions=0).action == "hold"
        assert again.decide(159, current=6, sessions=0).action == "hold"
        assert again.decide(160, current=6, sessions=0).desired == 2

    def test_scale_up_is_never_held_back(self) -> None:
        scaler = Autoscaler(policy(delay=600))
        assert scaler.decide(0, current=2, sessions=0).action == "hold"
        assert scaler.decide(1, current=2, sessions=75).desired == 8

    def test_oscillating_load_holds_the_peak(self) -> None:
        scaler = Autoscaler(policy(delay=30))
        desired = 2
        for t in range(0, 300, 5):
            sessions = 60 if (t // 20) % 2 else 5  # 6 workers, then 2, every 20 s
            desired = scaler.decide(t, current=desired, sessions=sessions).desired
            if t >= 20:
                assert desired == 6, t


class TestVictims:
    def test_the_least_loaded_goes_first(self) -> None:
        members = [Member("a", "ready", 5), Member("b", "ready", 1), Member("c", "ready", 3)]
        assert [m.name for m in victims(members, 2)] == ["b", "c"]

    def test_outdated_workers_go_before_lighter_current_ones(self) -> None:
        members = [Member("a", "ready", 9, outdated=True), Member("b", "ready", 0)]
        assert [m.name for m in victims(members, 1)] == ["a"]

    def test_ties_break_on_connections_then_name(self) -> None:
        members = [
            Member("c", "ready", 2, connections=1),
            Member("b", "ready", 2, connections=4),
            Member("a", "ready", 2, connections=1),
        ]
        assert [m.name for m in victims(members, 3)] == ["a", "c", "b"]

    def test_draining_workers_are_not_candidates(self) -> None:
        members = [Member("a", "draining", 0), Member("b", "ready", 4)]
        assert [m.name for m in victims(members, 2)] == ["b"]

    def test_swarm_rows_become_members(self) -> None:
        rows = [
            {"id": "w-0", "state": "active", "sessions": 3, "connections": 4},
            {"id": "w-1", "state": "down", "sessions": None},
            {"id": "w-2", "state": "draining", "sessions": 1},
        ]
        assert members_of(rows) == [Member("w-0", "ready", 3, 4), Member("w-2", "draining", 1)]


def ready(name: str, sessions: int = 0, outdated: bool = False) -> Member:
    return Member(name, "ready", sessions, outdated=outdated)


class TestPlan:
    def test_missing_workers_are_started(self) -> None:
        step = plan([ready("a")], desired=3, draining=0)
        assert (step.create, step.drain, step.phase) == (2, (), "scaling up")

    def test_extra_workers_are_drained_one_at_a_time_by_default(self) -> None:
        members = [ready("a", 4), ready("b", 1), ready("c", 0), ready("d", 2)]
        step = plan(members, desired=2, draining=0)
        assert [m.name for m in step.drain] == ["c"] and step.phase == "scaling down"
        assert "c (0 sessions), least loaded" in step.reason
        # The next round, with c leaving: still one drain running, so nothing new.
        later = plan([m for m in members if m.name != "c"], desired=2, draining=1)
        assert later.drain == () and later.phase == "waiting"
        both = plan(members, desired=2, draining=0, max_drains=2)
        assert [m.name for m in both.drain] == ["c", "b"]

    def test_a_rollout_starts_one_new_worker_then_drains_one_old_one(self) -> None:
        old = [ready("a", 3, outdated=True), ready("b", 1, outdated=True)]
        step = plan(old, desired=2, draining=0)
        assert (step.create, step.drain, step.phase) == (1, (), "rolling out")
        new_starting = [*old, Member("n1", "starting")]
        assert plan(new_starting, desired=2, draining=0).phase == "waiting"
        new_ready = [*old, ready("n1")]
        step = plan(new_ready, desired=2, draining=0)
        assert [m.name for m in step.drain] == ["b"] and step.phase == "rolling out"
        # While b drains, no second new worker: one step at a time.
        assert plan([old[0], ready("n1")], desired=2, draining=1).create == 0
        # b gone: the next step.
        assert plan([old[0], ready("n1")], desired=2, draining=0).create == 1
        assert plan([ready("n1"), ready("n2")], desired=2, draining=0).phase == "stable"

    def test_a_rollout_during_a_scale_down_removes_outdated_workers_first(self) -> None:
        members = [ready("a", 0), ready("b", 5, outdated=True), ready("c", 2)]
        step = plan(members, desired=2, draining=0)
        assert [m.name for m in step.drain] == ["b"]

    def test_a_stable_pool_does_nothing(self) -> None:
        step = plan([ready("a"), ready("b")], desired=2, draining=0)
        assert (step.create, step.drain, step.phase) == (0, (), "stable")
