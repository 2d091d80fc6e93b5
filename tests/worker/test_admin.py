"""The admin guard shared by worker and router: refused unless configured, constant-time bearer
comparison, several tokens accepted during a rotation."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract.admin_token import accepted_tokens, require_admin, sending_token


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def call(token: str | None, header: str | None) -> httpx.Response:
    app = Starlette(routes=[Route("/admin/x", require_admin(token, ok))])
    headers = {"authorization": header} if header is not None else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get("/admin/x", headers=headers)


class TestAdminGuard:
    async def test_without_a_configured_token_every_call_is_refused(self) -> None:
        for configured in (None, "", " , "):
            r = await call(configured, "Bearer anything")
            assert r.status_code == 403 and "set ADMIN_TOKEN" in r.json()["error"]

    async def test_a_missing_wrong_or_non_bearer_credential_is_refused(self) -> None:
        for header in (None, "Bearer nope", "Basic s3cret", "s3cret", "Bearer "):
            r = await call("s3cret", header)
            assert r.status_code == 401, header
            assert "Authorization: Bearer $ADMIN_TOKEN" in r.json()["error"]

    async def test_the_right_token_passes(self) -> None:
        assert (await call("s3cret", "Bearer s3cret")).json() == {"ok": True}
        assert (await call("s3cret", "bearer s3cret")).status_code == 200

    async def test_during_a_rotation_both_tokens_pass_and_the_first_is_sent(self) -> None:
        assert (await call("new, old", "Bearer new")).status_code == 200
        assert (await call("new, old", "Bearer old")).status_code == 200
        assert (await call("new, old", "Bearer new, old")).status_code == 401
        assert accepted_tokens("new, old") == ("new", "old")
        assert sending_token("new, old") == "new" and sending_token(None) is None
