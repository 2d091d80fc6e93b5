"""Bearer-token guard for ``/admin/*``, shared by worker and router.

Without a configured token the admin API is refused, never open; tokens are compared in
constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Endpoint = Callable[[Request], Awaitable[Response]]


def require_admin(token: str | None, endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        if token is None:
            return JSONResponse(
                {"error": "admin API disabled: set ADMIN_TOKEN on this process to enable it"},
                status_code=403,
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse(
                {
                    "error": "missing or wrong admin token: "
                    "send 'Authorization: Bearer $ADMIN_TOKEN'"
                },
                status_code=401,
            )
        return await endpoint(request)

    return guarded
