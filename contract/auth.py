"""Client authentication: an HS256 JWT per WebSocket, checked before any state is touched.

With ``AUTH_SECRET`` set, every client connection carries a token, either as the ``token`` query
parameter or as one of the subprotocols it offers in ``Sec-WebSocket-Protocol`` (browsers cannot
set other headers on a WebSocket). ``sub`` is the user, ``sessions`` the session ids it may open
(or ``"*"``). The router checks (so a refused client never reaches a worker) and the worker checks
again (it must not trust whoever can reach its port); both use this module, so they agree.

A token is checked once, at connect: a connection outlives its token's ``exp``, as a logged-in
editor tab would. Without ``AUTH_SECRET`` everything is open and both processes say so at start.

Errors (mapped to close codes, and on the JSON protocol to an ``error`` message, at the edges)::

    AuthRefused(code, reason)        the connection is closed with ``code`` and ``reason``
    ├── Unauthenticated   4401       no token, malformed, forged, expired, not yet valid, bad claims
    └── Forbidden         4403       a good token that does not allow this user or this session
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs

import jwt

from . import close_codes as codes
from .env import rotating_values

# Clocks of the token issuer, the routers and the workers drift apart a little: ``exp`` and
# ``nbf`` are honoured this many seconds late / early.
LEEWAY_S = 30
ALGORITHMS = ["HS256"]  # fixed here, never taken from the token (so ``alg: none`` is refused)
ALL_SESSIONS: Literal["*"] = "*"
_MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key has at least 256 bits
# Three base64url segments (the signature may be empty, as in an ``alg: none`` token, so that
# such a token is recognised, selected and then refused with its reason rather than ignored).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Said to a client that sent no token, with where to put one. The original service had no
# authentication, so its clients send none: the reason says that this server wants one.
_NO_TOKEN = (
    "missing token: send a JWT as ?token=... or as a Sec-WebSocket-Protocol entry"
    " (this server has AUTH_SECRET set)"
)
_NO_BEARER = "missing token: send 'Authorization: Bearer <JWT>' (this server has AUTH_SECRET set)"


class AuthRefused(Exception):
    """A connection refused by authentication; ``reason`` fits a close frame (<= 123 bytes)."""

    code: ClassVar[int]
    label: ClassVar[str]  # for metrics: ``reason`` label of the error counters

    def __init__(self, reason: str) -> None:
        reason = codes.fit_reason(reason)
        super().__init__(reason)
        self.reason = reason


class Unauthenticated(AuthRefused):
    code = codes.UNAUTHENTICATED
    label = "unauthenticated"


class Forbidden(AuthRefused):
    code = codes.FORBIDDEN
    label = "forbidden"


def _short(value: str, limit: int = 32) -> str:
    """An id quoted in a close reason, cut so that the reason stays within 123 bytes."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _when(timestamp: object) -> str:
    if not isinstance(timestamp, int | float):
        return "?"
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "?"


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: one user, some sessions (or all), some of them read-only.

    ``readonly`` (claim ``readonly``: ``true`` for every session, or a list of session ids):
    such a connection sees everything and may show presence, but every write is refused
    (JSON and HTTP: 403 / an error; y-websocket: its updates are not applied, see
    docs/protocols.md).
    """

    user: str
    sessions: frozenset[str] | Literal["*"]
    readonly: frozenset[str] | Literal["*"] = frozenset()

    def can_write(self, session_id: str) -> bool:
        return self.readonly != ALL_SESSIONS and session_id not in self.readonly

    def check_write(self, session_id: str) -> None:
        if not self.can_write(session_id):
            raise Forbidden(
                f"token is read-only for session {_short(session_id, 48)}; "
                "get a token that allows writing"
            )

    def check_user(self, user_id: str) -> None:
        if user_id != self.user:
            raise Forbidden(
                f"token is for user {_short(self.user)}, join says {_short(user_id)}; "
                "join as the token's user"
            )

    def check_session(self, session_id: str) -> None:
        if self.sessions != ALL_SESSIONS and session_id not in self.sessions:
            raise Forbidden(
                f"token does not allow session {_short(session_id, 48)}; get a token listing it"
            )

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Grant:
        user = claims.get("sub")
        if not isinstance(user, str) or not user:
            raise Unauthenticated("token has no 'sub' (the userId); get a new one")
        raw = claims.get("sessions")
        sessions: frozenset[str] | Literal["*"]
        if raw == ALL_SESSIONS or raw == [ALL_SESSIONS]:
            sessions = ALL_SESSIONS
        elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            sessions = frozenset(raw)
        else:
            raise Unauthenticated(
                "token has no valid 'sessions' claim (a list of session ids, or \"*\")"
            )
        ro = claims.get("readonly", False)
        readonly: frozenset[str] | Literal["*"]
        if ro is True or ro == ALL_SESSIONS:
            readonly = ALL_SESSIONS
        elif ro is False or ro is None:
            readonly = frozenset()
        elif isinstance(ro, list) and all(isinstance(s, str) for s in ro):
            readonly = frozenset(ro)
        else:
            raise Unauthenticated("token's 'readonly' claim must be true, false or a list of ids")
        return cls(user, sessions, readonly)


def token_subprotocol(offered: Sequence[str]) -> str | None:
    """The first offered subprotocol shaped like a JWT."""
    for entry in offered:
        if _JWT_SHAPE.fullmatch(entry):
            return entry
    return None


def _query_token(query: str | bytes) -> str | None:
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    values = parse_qs(text).get("token")
    return values[0] if values else None


class Authenticator:
    """One per process, built from ``AUTH_SECRET``; ``None`` turns authentication off."""

    def __init__(self, secret: str | None) -> None:
        # Several comma-separated secrets while one is rotated: a token signed with any of
        # them is accepted (docs/operations.md, "Rotate tokens").
        self._secrets = rotating_values(secret)
        self._secret = self._secrets[0] if self._secrets else None

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def startup_warning(self) -> tuple[str, dict[str, str]] | None:
        """An event and its fields for the process to log at start, if its setup is unsafe."""
        if self._secret is None:
            return "auth_disabled", {
                "consequence": "any client can open and edit any session as any user",
                "fix": "set AUTH_SECRET (the same on routers and workers) and give clients JWTs",
            }
        if any(len(s.encode()) < _MIN_SECRET_BYTES for s in self._secrets):
            return "auth_secret_weak", {
                "consequence": "AUTH_SECRET is shorter than 32 bytes; tokens can be brute-forced",
                "fix": "use a random secret of at least 32 bytes (openssl rand -hex 32)",
            }
        return None

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        """The subprotocol to select in the 101 response.

        A client that offers subprotocols fails the handshake unless the server selects one, so
        the token carrier is echoed, also when the token is then refused: that way the refusal's
        close code and reason reach a browser (which then stops reconnecting) instead of a bare
        handshake failure. Without authentication nothing is selected, as before.
        """
        return token_subprotocol(offered) if self._secret is not None else None

    def authenticate_bearer(self, authorization: str | None) -> Grant | None:
        """The grant of an HTTP request's ``Authorization: Bearer <JWT>``; None when off."""
        if self._secret is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(_NO_BEARER)
        return self._grant(token.strip())

    def authenticate(self, query: str | bytes, offered: Sequence[str]) -> Grant | None:
        """The grant of this connection's token; None when authentication is off.

        The ``token`` query parameter wins over a token among the offered subprotocols.
        Raises Unauthenticated when the token is missing, malformed, forged, expired or not yet
        valid, or lacks a string ``sub`` or a valid ``sessions`` claim.
        """
        if self._secret is None:
            return None
        token = _query_token(query) or token_subprotocol(offered)
        if not token:
            raise Unauthenticated(_NO_TOKEN)
        return self._grant(token)

    def _grant(self, token: str) -> Grant:
        for secret in self._secrets[:-1]:
            try:
                return Grant.from_claims(self._decode(token, secret))
            except _WrongSecret:
                continue
        try:
            return Grant.from_claims(self._decode(token, self._secrets[-1]))
        except _WrongSecret:
            raise Unauthenticated("token signature does not match AUTH_SECRET") from None

    @staticmethod
    def _decode(token: str, secret: str) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                # PyJWT warns about a short secret on every token (InsecureKeyLengthWarning, a
                # UserWarning); it is reported once at start instead (startup_warning).
                warnings.simplefilter("ignore", UserWarning)
                claims: dict[str, Any] = jwt.decode(
                    token,
                    secret,
                    algorithms=ALGORITHMS,
                    leeway=LEEWAY_S,
                    # exp and nbf are checked when present; aud is not ours to judge.
                    options={"verify_aud": False, "require": []},
                )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(f"token expired at {_expiry(token)}; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "token not valid yet (nbf/iat in the future); check the issuer's clock"
            ) from None
        except jwt.InvalidSignatureError:
            raise _WrongSecret from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated("token must be signed with HS256 and AUTH_SECRET") from None
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the problem, never the token's content.
            problem = _short(str(exc), 60)
            raise Unauthenticated(f"invalid token ({problem}); get a new one") from None
        return claims


class _WrongSecret(Exception):
    """The signature does not match this one secret (another listed one may match)."""


def _expiry(token: str) -> str:
    # Only reached after the signature was verified: reading the claim again is safe.
    claims = jwt.decode(token, options={"verify_signature": False})
    return _when(claims.get("exp"))
