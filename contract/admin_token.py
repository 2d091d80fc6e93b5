"""Bearer-token guard for ``/admin/*``, shared by worker and router.

Without a configured token the admin API is refused, never open; tokens are compared in
constant time. ``ADMIN_TOKEN`` may hold several comma-separated tokens while one is rotated:
every one of them is accepted, and the first is the one this process sends (a router asking a
worker to hand a session off). docs/operations.md has the rotation steps.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .env import rotating_values

Endpoint = Callable[[Request], Awaitable[Response]]


def accepted_tokens(value: str | None) -> tuple[str, ...]:
    return rotating_values(value)


def sending_token(value: str | None) -> str | None:
    """The token this process presents to others: the first one listed."""
    tokens = accepted_tokens(value)
    return tokens[0] if tokens else None


def require_admin(token: str | None, endpoint: Endpoint) -> Endpoint:
    tokens = [t.encode() for t in accepted_tokens(token)]

    async def guarded(request: Request) -> Response:
        if not tokens:
            return JSONResponse(
                {"error": "admin API disabled: set ADMIN_TOKEN on this process to enable it"},
                status_code=403,
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # Every token is compared (no early exit), so timing says nothing about which matched.
        matches = [hmac.compare_digest(given.encode(), t) for t in tokens]
        if scheme.lower() != "bearer" or not any(matches):
            return JSONResponse(
                {
                    "error": "missing or wrong admin token: "
                    "send 'Authorization: Bearer $ADMIN_TOKEN'"
                },
                status_code=401,
            )
        return await endpoint(request)

    return guarded
