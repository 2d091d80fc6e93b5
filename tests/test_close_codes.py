"""Close reasons fit their frame: RFC 6455 gives a close frame 125 bytes, 2 of them the code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.close_codes import (
    CLIENT_ID_CONFLICT,
    FORBIDDEN,
    MAX_REASON_BYTES,
    TOO_LARGE,
    UNAUTHENTICATED,
    fit_reason,
)
from worker.limits import Refusal


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


class TestOurCodes:
    def test_refusals_a_client_must_not_retry_are_permanent_for_y_websocket(self) -> None:
        """y-websocket 3 stops reconnecting after a close in 4400-4499: a client refused by
        authentication, a client ID conflict or a limit would otherwise send the same again."""
        for code in (UNAUTHENTICATED, FORBIDDEN, CLIENT_ID_CONFLICT, TOO_LARGE):
            assert 4400 <= code < 4500
        assert TOO_LARGE == 4413  # HTTP 413 Content Too Large

    def test_every_code_of_ours_is_distinct(self) -> None:
        ours = [UNAUTHENTICATED, FORBIDDEN, CLIENT_ID_CONFLICT, TOO_LARGE]
        assert len(set(ours)) == len(ours)

    def test_a_limit_reason_fits_unchanged(self) -> None:
        reason = Refusal("document", "MAX_DOC_BYTES", 2**63 - 1, 2**63 - 1).reason
        assert fit_reason(reason) == reason
