"""Close reasons fit their frame: RFC 6455 gives a close frame 125 bytes, 2 of them the code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.close_codes import MAX_REASON_BYTES, fit_reason


class TestFitReason:
    def test_a_reason_that_fits_is_kept_whole(self) -> None:
        reason = "é" * 61 + "x"  # exactly 123 bytes
        assert fit_reason(reason) is reason
        assert fit_reason("") == ""

    def test_an_ascii_reason_is_cut_to_123_bytes(self) -> None:
        assert fit_reason("x" * 200) == "x" * MAX_REASON_BYTES == "x" * 123

    @pytest.mark.parametrize(
        ("reason", "limit", "fitted"),
        [("aé", 2, "a"), ("ab€", 3, "ab"), ("ab€", 4, "ab"), ("a😀", 4, "a"), ("a😀", 5, "a😀")],
    )
    def test_a_character_that_would_be_split_is_left_out(
        self, reason: str, limit: int, fitted: str
    ) -> None:
        assert fit_reason(reason, limit) == fitted

    @given(st.text(min_size=0, max_size=200), st.integers(min_value=0, max_value=130))
    def test_any_reason_becomes_the_longest_prefix_that_fits(self, reason: str, limit: int) -> None:
        fitted = fit_reason(reason, limit)
        data = fitted.encode()  # always valid UTF-8: it is a str
        assert len(data) <= limit and reason.startswith(fitted)
        rest = reason[len(fitted) :]
        assert not rest or len(data) + len(rest[0].encode()) > limit
