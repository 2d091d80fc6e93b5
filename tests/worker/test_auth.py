"""Client tokens, checked the same way by workers and routers (worker/auth.py)."""

from __future__ import annotations

import time
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import close_codes as codes
from contract.auth import (
    ALL_SESSIONS,
    LEEWAY_S,
    Authenticator,
    AuthRefused,
    Forbidden,
    Grant,
    Unauthenticated,
)
from tests.tokens import SECRET, bad_tokens, mint

AUTH = Authenticator(SECRET)
MISSING_TOKEN = (
    "missing token: send a JWT as ?token=... or as a Sec-WebSocket-Protocol entry"
    " (this server has AUTH_SECRET set)"
)


def refusal(query: str = "", offered: tuple[str, ...] = ()) -> AuthRefused:
    with pytest.raises(AuthRefused) as refused:
        AUTH.authenticate(query, list(offered))
    return refused.value


class TestAuthenticator:
    def test_without_a_secret_everything_is_open_and_no_subprotocol_is_selected(self) -> None:
        """Authentication off: no grant, no refusal, and an offered token is not selected."""
        auth = Authenticator(None)
        token = mint()
        assert not auth.enabled
        assert auth.authenticate("", []) is None
        assert auth.authenticate("token=garbage", ["x.y.z"]) is None
        assert auth.subprotocol([token]) is None

    def test_during_a_rotation_tokens_of_either_secret_pass_and_others_do_not(self) -> None:
        new = "new-secret-" + "f" * 40
        rotating = Authenticator(f"{new},{SECRET}")
        for secret in (new, SECRET):
            grant = rotating.authenticate(f"token={mint('dana', secret=secret)}", [])
            assert grant is not None and grant.user == "dana"
        with pytest.raises(Unauthenticated) as refused:
            rotating.authenticate(f"token={mint(secret='z' * 40)}", [])
        assert refused.value.reason == "token signature does not match AUTH_SECRET"
        with pytest.raises(Unauthenticated) as expired:
            rotating.authenticate(f"token={mint(secret=SECRET, expires_in=-3600)}", [])
        assert "expired" in expired.value.reason

    def test_a_token_in_the_query_grants_its_user_and_sessions(self) -> None:
        grant = AUTH.authenticate(f"a=1&token={mint('alice', ['s1', 's2'])}", [])
        assert grant == Grant("alice", frozenset({"s1", "s2"}))

    def test_the_query_string_may_be_bytes_as_asgi_gives_it(self) -> None:
        grant = AUTH.authenticate(f"token={mint('bob')}".encode(), [])
        assert grant is not None and grant.user == "bob"

    def test_a_token_among_the_offered_subprotocols_is_used_and_selected(self) -> None:
        """The JWT-shaped entry is the token, and it is the subprotocol the 101 must select."""
        token = mint("carol", ["s"])
        offered = ["y-websocket", token]
        grant = AUTH.authenticate("", offered)
        assert grant == Grant("carol", frozenset({"s"}))
        assert AUTH.subprotocol(offered) == token

    def test_offered_subprotocols_that_are_not_tokens_are_not_selected(self) -> None:
        assert AUTH.subprotocol(["y-websocket", "chat.v2"]) is None
        assert refusal(offered=("y-websocket",)).code == codes.UNAUTHENTICATED

    def test_the_query_token_wins_over_a_subprotocol_token(self) -> None:
        grant = AUTH.authenticate(f"token={mint('query')}", [mint("header")])
        assert grant is not None and grant.user == "query"

    def test_a_missing_token_is_refused_with_where_to_put_one(self) -> None:
        """The original's clients send no token: the reason says what to send, and where."""
        refused = refusal("token=")
        assert isinstance(refused, Unauthenticated) and refused.code == codes.UNAUTHENTICATED
        assert refused.reason == MISSING_TOKEN
        # Whole, not cut by fit_reason: a close frame carries at most 123 bytes of reason.
        assert len(MISSING_TOKEN.encode()) <= codes.MAX_REASON_BYTES

    @pytest.mark.parametrize("header", [None, "", "Basic YWxpY2U6", "Bearer "])
    def test_an_http_request_without_a_bearer_token_is_told_what_to_send(
        self, header: str | None
    ) -> None:
        with pytest.raises(Unauthenticated) as caught:
            AUTH.authenticate_bearer(header)
        assert caught.value.reason == (
            "missing token: send 'Authorization: Bearer <JWT>' (this server has AUTH_SECRET set)"
        )

    def test_an_expired_token_is_refused_with_its_expiry(self) -> None:
        refused = refusal(f"token={mint(expires_in=-3600)}")
        assert refused.code == codes.UNAUTHENTICATED
        assert refused.reason.startswith("token expired at 20")
        assert refused.reason.endswith("; get a new one")

    def test_a_token_expired_within_the_leeway_still_passes(self) -> None:
        """Clock drift between issuer, routers and workers is forgiven up to LEEWAY_S."""
        assert AUTH.authenticate(f"token={mint(expires_in=-(LEEWAY_S - 10))}", []) is not None

    def test_a_token_without_exp_is_accepted(self) -> None:
        assert AUTH.authenticate(f"token={mint(expires_in=None)}", []) is not None

    def test_a_token_not_valid_yet_is_refused(self) -> None:
        refused = refusal(f"token={mint(nbf=int(time.time()) + 3600)}")
        assert refused.code == codes.UNAUTHENTICATED and "not valid yet" in refused.reason

    @pytest.mark.parametrize("name", sorted(bad_tokens()))
    def test_bad_tokens_are_refused_with_their_cause(self, name: str) -> None:
        token, cause = bad_tokens()[name]
        for query, offered in ((f"token={token}", ()), ("", (token,))):
            refused = refusal(query, offered)
            assert refused.code == codes.UNAUTHENTICATED and cause in refused.reason

    def test_only_hs256_is_accepted_even_with_the_right_secret(self) -> None:
        """The algorithm is ours to fix, never the token's to choose."""
        assert "HS256" in refusal(f"token={mint(algorithm='HS512')}").reason

    @pytest.mark.parametrize("token", ["x", "a.b", "a.b.c", "e30.e30.", "%ZZ"])
    def test_malformed_tokens_are_refused(self, token: str) -> None:
        assert refusal(f"token={token}").code == codes.UNAUTHENTICATED

    @pytest.mark.parametrize("sub", [None, "", 42, ["alice"]])
    def test_a_token_without_a_string_sub_is_refused(self, sub: object) -> None:
        refused = refusal(f"token={mint(sub=sub)}")
        assert refused.code == codes.UNAUTHENTICATED

    @pytest.mark.parametrize("sessions", [None, "s1", 5, ["s1", 2], {"s1": True}])
    def test_a_token_without_a_valid_sessions_claim_is_refused(self, sessions: object) -> None:
        refused = refusal(f"token={mint(sessions=sessions)}")
        assert refused.code == codes.UNAUTHENTICATED and "'sessions'" in refused.reason

    @pytest.mark.parametrize("sessions", ["*", ["*"]])
    def test_a_star_allows_every_session(self, sessions: object) -> None:
        grant = AUTH.authenticate(f"token={mint(sessions=sessions)}", [])
        assert grant is not None and grant.sessions == ALL_SESSIONS
        grant.check_session("anything-at-all")

    def test_an_audience_is_not_ours_to_judge(self) -> None:
        assert AUTH.authenticate(f"token={mint(aud='some-other-service')}", []) is not None

    def test_the_start_up_warning_names_the_risk_and_the_fix(self) -> None:
        """Open (no secret) and weak (short secret) setups are said once at start; good is quiet."""
        event, fields = Authenticator(None).startup_warning() or ("", {})
        assert event == "auth_disabled" and "AUTH_SECRET" in fields["fix"]
        event, fields = Authenticator("short").startup_warning() or ("", {})
        assert event == "auth_secret_weak" and "32 bytes" in fields["fix"]
        assert AUTH.startup_warning() is None

    def test_a_short_secret_still_works_without_a_warning_per_token(self) -> None:
        """PyJWT's per-token key-length warning would be an error here (filterwarnings)."""
        auth = Authenticator("short")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # recent PyJWT warns the issuer's side, rightly
            token = mint(secret="short")
        assert auth.authenticate(f"token={token}", []) is not None

    @given(query=st.text(max_size=300), offered=st.lists(st.text(max_size=200), max_size=3))
    def test_any_input_is_a_grant_or_a_refusal_that_fits_a_close_frame(
        self, query: str, offered: list[str]
    ) -> None:
        try:
            AUTH.authenticate(query, offered)
        except AuthRefused as refused:
            assert refused.code in (codes.UNAUTHENTICATED, codes.FORBIDDEN)
            assert len(refused.reason.encode()) <= 123


class TestGrant:
    def test_the_join_must_be_the_tokens_user(self) -> None:
        grant = Grant("alice", ALL_SESSIONS)
        grant.check_user("alice")
        with pytest.raises(Forbidden) as refused:
            grant.check_user("bob")
        assert refused.value.code == codes.FORBIDDEN
        assert refused.value.reason.startswith("token is for user alice, join says bob")

    def test_only_listed_sessions_are_allowed(self) -> None:
        grant = Grant("alice", frozenset({"s1"}))
        grant.check_session("s1")
        with pytest.raises(Forbidden) as refused:
            grant.check_session("s2")
        assert refused.value.reason.startswith("token does not allow session s2")

    def test_reasons_quoting_long_ids_still_fit_a_close_frame(self) -> None:
        grant = Grant("ü" * 256, frozenset())
        for check, value in ((grant.check_user, "b" * 256), (grant.check_session, "s" * 128)):
            with pytest.raises(Forbidden) as refused:
                check(value)
            assert len(refused.value.reason.encode()) <= 123
