"""The verdict: which counts break a run, and the exit code (bench/chaos/report.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.chaos import report

PASSED: dict[str, Any] = {
    "faults": {"kill": 2, "partition": 3},
    "acked": 120,
    "lost": 0,
    "missing_tokens": 0,
    "duplicated_tokens": 0,
    "diverged_files": 0,
    "max_live_owners": 1,
    "stuck_clients": 0,
    "recovery_s": {"p50": 1.0, "p99": 4.0, "max": 4.0, "n": 5},
    "unexpected_exits": [],
    "workload_exit": 0,
}


class TestVerdict:
    def test_a_clean_run_exits_0_and_says_ok(self) -> None:
        assert report.exit_code(PASSED) == 0
        assert report.table(PASSED).endswith("result: OK")
        assert set(report.KEYS) <= set(json.loads(report.as_json(PASSED)))

    @pytest.mark.parametrize("key", report.MUST_BE_ZERO)
    def test_any_loss_divergence_or_stuck_client_fails_the_run(self, key: str) -> None:
        broken = {**PASSED, key: 1}
        assert report.exit_code(broken) == report.BROKEN
        assert f"{key} = 1" in report.table(broken)

    def test_two_live_owners_fail_the_run_one_does_not(self) -> None:
        assert report.exit_code({**PASSED, "max_live_owners": 2}) == report.BROKEN
        assert report.exit_code({**PASSED, "max_live_owners": 0}) == 0

    def test_a_process_that_died_by_itself_fails_the_run(self) -> None:
        died = {**PASSED, "unexpected_exits": [{"process": "w1", "code": 1, "t": 0.0}]}
        assert report.exit_code(died) == report.BROKEN
        assert "w1 exited by itself" in report.table(died)

    def test_a_run_that_could_not_be_carried_out_exits_2(self) -> None:
        assert report.exit_code({"error": "the workload was not ready"}) == report.NOT_RUN
