"""The fault schedule keeps its promises for any seed (bench/chaos/schedule.py)."""

from __future__ import annotations

import itertools

import pytest

from bench.chaos.schedule import DURATIONS, END_MARGIN, KINDS, plan
from bench.chaos.topology import WORKERS, traffic_paths

SEEDS = range(200)
PATHS = traffic_paths()


class TestSchedule:
    def test_the_same_seed_gives_the_same_schedule(self) -> None:
        assert plan(7, 60, PATHS) == plan(7, 60, PATHS)
        assert plan(7, 60, PATHS) != plan(8, 60, PATHS)

    @pytest.mark.parametrize("seed", SEEDS)
    def test_a_60s_run_has_every_kind_and_no_10s_without_a_fault(self, seed: int) -> None:
        faults = plan(seed, 60, PATHS)
        assert {f.kind for f in faults} == set(KINDS)
        starts = [0.0] + [f.at for f in faults] + [60.0 - END_MARGIN]
        assert max(b - a for a, b in itertools.pairwise(starts)) <= 10

    @pytest.mark.parametrize("seed", SEEDS)
    def test_faults_overlap_but_never_on_the_same_thing(self, seed: int) -> None:
        faults = plan(seed, 60, PATHS)
        overlapping = [
            (a, b) for a, b in itertools.combinations(faults, 2) if a.at < b.end and b.at < a.end
        ]
        assert overlapping, "several faults are active at once"
        assert all(a.resource != b.resource for a, b in overlapping)

    @pytest.mark.parametrize("seed", SEEDS)
    def test_each_fault_is_bounded_and_ends_before_the_run(self, seed: int) -> None:
        for fault in plan(seed, 60, PATHS):
            low, high = DURATIONS[fault.kind]
            assert low <= fault.duration <= high + 0.001
            assert fault.end <= 60 - END_MARGIN + 0.001

    def test_loopback_schedules_only_cut_paths_it_has(self) -> None:
        loopback = traffic_paths(worker_to_worker=False)
        for seed in SEEDS:
            for fault in plan(seed, 60, loopback):
                if fault.kind.startswith("partition"):
                    assert not set(fault.hosts) <= set(WORKERS), fault

    def test_a_short_run_still_has_faults_and_ends_in_time(self) -> None:
        faults = plan(3, 10, PATHS)
        assert faults and all(f.end <= 10 - END_MARGIN + 0.001 for f in faults)
