"""The HTTP API through a real router to real workers: every route, its refusals, durability.

Every answer of the implementation is checked against the OpenAPI description the router serves
(``/api/openapi.json``) with openapi-core, so the description cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters

from router.settings import RouterSettings
from tests.pool import TOKEN, Pool, another_router, pool, sessions_owned_by, start_worker
from tests.s3server import free_port
from tests.support import YjsClient
from tests.tokens import SECRET, mint


@dataclass
class SpecRequest:
    """An httpx request as openapi-core's Request protocol sees it."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class SpecResponse:
    data: bytes
    status_code: int
    content_type: str
    headers: dict[str, str]


class Api:
    """An HTTP client for the router's API that checks every answer against the spec."""

    def __init__(self, base: str, spec: OpenAPI, token: str | None = None) -> None:
        self.base = base
        self.spec = spec
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self.checked = 0

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        content = kw.pop("content", None)
        if body is not None:
            content = json.dumps(body).encode()
        async with httpx.AsyncClient() as http:
            r = await http.request(
                method,
                self.base + path,
                content=content,
                headers={**self.headers, "content-type": "application/json"},
                timeout=30,
            )
        if "/" not in path.split("/files/", 1)[-1] or "/files/" not in path:
            self._check(method, path, content, r)
        return r

    def _check(self, method: str, path: str, content: bytes | None, r: httpx.Response) -> None:
        url = urlsplit(self.base + path)
        request = SpecRequest(
            f"{url.scheme}://{url.netloc}", url.path, method.lower(), content, "application/json"
        )
        response = SpecResponse(
            r.content, r.status_code, r.headers.get("content-type", ""), dict(r.headers)
        )
        self.spec.validate_response(request, response)
        self.checked += 1


@asynccontextmanager
async def api_pool(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Pool, Api]]:
    router = {"auth_secret": env["AUTH_SECRET"]} if "AUTH_SECRET" in env else {}
    storage = {"STORAGE_DIR": str(tmp_path / "storage"), **env}
    async with pool(tmp_path, 2, storage, **router) as p:
        async with httpx.AsyncClient() as http:
            spec = OpenAPI.from_dict((await http.get(p.http + "/api/openapi.json")).json())
        yield p, Api(p.http, spec)


class TestFiles:
    async def test_every_file_route_answers_as_described(self, tmp_path: Path) -> None:
        async with api_pool(tmp_path) as (_p, api):
            created = await api.call("POST", "/api/sessions", {"id": "s-api"})
            assert created.status_code == 201 and created.json() == {"id": "s-api"}
            assert (await api.call("POST", "/api/sessions", {"id": "s-api"})).status_code == 409
            put = await api.call("PUT", "/api/sessions/s-api/files/a.py", {"content": "x = 1\n"})
            assert put.status_code == 200 and put.json()["created"] is True
            again = await api.call("PUT", "/api/sessions/s-api/files/a.py", {"content": "x = 2\n"})
            assert again.json()["created"] is False
            read = await api.call("GET", "/api/sessions/s-api/files/a.py")
            assert read.json()["content"] == "x = 2\n" and read.json()["version"]
            nested = await api.call("PUT", "/api/sessions/s-api/files/src/b.py", {"content": "b"})
            assert nested.status_code == 200
            listed = await api.call("GET", "/api/sessions/s-api/files")
            assert listed.json()["files"] == [
                {"path": "a.py", "type": "text"},
                {"path": "src/b.py", "type": "text"},
            ]
            renamed = await api.call(
                "POST", "/api/sessions/s-api/rename", {"from": "a.py", "to": "c.py"}
            )
            assert renamed.json() == {"from": "a.py", "to": "c.py"}
            gone = await api.call("GET", "/api/sessions/s-api/files/a.py")
            assert gone.status_code == 404 and gone.json()["error"] == "Failed to get file"
            deleted = await api.call("DELETE", "/api/sessions/s-api/files/c.py")
            assert deleted.json() == {"path": "c.py", "deleted": True}
            sessions = await api.call("GET", "/api/sessions")
            assert sessions.json()["sessions"][0]["id"] == "s-api"
            assert sessions.json()["sessions"][0]["isGitRepo"] is True
            assert api.checked >= 10

    async def test_bad_requests_get_clear_errors_and_change_nothing(self, tmp_path: Path) -> None:
        async with api_pool(tmp_path) as (p, api):
            await api.call("PUT", "/api/sessions/s-bad/files/a.txt", {"content": "kept"})
            cases = [
                ("PUT", "/api/sessions/s-bad/files/.git/config", {"content": "x"}, 400),
                ("PUT", "/api/sessions/s-bad/files/a.txt", {"content": 3}, 400),
                ("PUT", "/api/sessions/bad..id/files/a.txt", {"content": "x"}, 400),
                ("GET", "/api/sessions/s-bad/files/nope.txt", None, 404),
                ("POST", "/api/sessions/s-bad/rename", {"from": "a.txt", "to": "../x"}, 400),
                ("GET", "/api/sessions/s-bad/history/" + "0" * 40 + "/files/a.txt", None, 404),
            ]
            for method, path, body, status in cases:
                r = await api.call(method, path, body)
                assert r.status_code == status, (method, path, r.text)
                assert set(r.json()) == {"error", "reason"}, r.json()
            raw = await api.call("PUT", "/api/sessions/s-bad/files/a.txt", content=b"{not json")
            assert raw.status_code == 400 and raw.json()["error"] == "Invalid message format"
            big = "x" * (4 * 1024 * 1024 + 10)
            too_big = await api.call("PUT", "/api/sessions/s-bad/files/a.txt", {"content": big})
            assert too_big.status_code == 413
            assert too_big.json()["error"] == "Invalid message format"
            read = await api.call("GET", "/api/sessions/s-bad/files/a.txt")
            assert read.json()["content"] == "kept"
            # A new session's oversize body, at the router and at a worker directly: 413 says
            # what is wrong with the body, never "Session not found".
            worker = next(iter(p.workers.values()))
            async with httpx.AsyncClient() as http:
                for base in (p.http, f"http://127.0.0.1:{worker.port}"):
                    r = await http.post(
                        f"{base}/api/sessions", content=b'{"id": "' + big.encode() + b'"}'
                    )
                    assert r.status_code == 413, (base, r.text)
                    assert r.json()["error"] == "Invalid message format", (base, r.text)
                    assert "byte limit" in r.json()["reason"]

    async def test_a_put_is_a_crdt_edit_so_concurrent_typing_survives(self, tmp_path: Path) -> None:
        async with api_pool(tmp_path) as (p, api):
            base = "line one\nline two\nline three\n"
            await api.call("PUT", "/api/sessions/s-crdt/files/a.txt", {"content": base})
            async with YjsClient.connect(p.url, "s-crdt/a.txt") as editor:
                await asyncio.wait_for(editor.synced.wait(), 5)
                read = (await api.call("GET", "/api/sessions/s-crdt/files/a.txt")).json()
                await editor.insert(0, "TYPED ")  # the bot below never sees this
                await editor.wait_text("TYPED " + base)  # applied, round trip
                await eventually_on_worker(p, "s-crdt", "TYPED ")
                bot = read["content"].replace("line three", "line 3")
                put = await api.call(
                    "PUT",
                    "/api/sessions/s-crdt/files/a.txt",
                    {"content": bot, "base": read["version"]},
                )
                assert put.status_code == 200, put.text
                await editor.wait_text("TYPED line one\nline two\nline 3\n")
                # A version is good for one write; a reused one is refused, nothing changes.
                stale = await api.call(
                    "PUT",
                    "/api/sessions/s-crdt/files/a.txt",
                    {"content": "lost", "base": read["version"]},
                )
                assert stale.status_code == 409 and "read the file again" in stale.json()["reason"]
            read = await api.call("GET", "/api/sessions/s-crdt/files/a.txt")
            assert read.json()["content"] == "TYPED line one\nline two\nline 3\n"

    async def test_an_acknowledged_put_survives_an_immediate_sigkill(self, tmp_path: Path) -> None:
        session = sessions_owned_by("w-0", ["w-0", "w-1"], 1, "ack")[0]
        async with api_pool(tmp_path, FLUSH_INTERVAL_MS="5000") as (p, api):
            put = await api.call(
                "PUT", f"/api/sessions/{session}/files/a.txt", {"content": "stored"}
            )
            assert put.status_code == 200
            p.workers["w-0"].signal(signal.SIGKILL)
            await p.workers["w-0"].wait()
            p.workers["w-0"] = await start_worker(tmp_path, p.env, "w-0")
            p.addresses[0] = ("127.0.0.1", p.workers["w-0"].port)
            await p.wait_ring({"w-0", "w-1"})
            read = await api.call("GET", f"/api/sessions/{session}/files/a.txt")
            assert read.json()["content"] == "stored"


async def eventually_on_worker(p: Pool, session: str, text: str) -> None:
    """Until the API reads ``text`` in the session's a.txt (the editor's edit reached it)."""
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            r = await http.get(f"{p.http}/api/sessions/{session}/files/a.txt")
            if text in r.json()["content"]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never reached the worker")


class TestHistory:
    async def test_commits_are_listed_read_diffed_and_restored_as_crdt_edits(
        self, tmp_path: Path
    ) -> None:
        async with api_pool(tmp_path) as (p, api):
            await api.call("POST", "/api/sessions", {"id": "s-hist"})
            await api.call("PUT", "/api/sessions/s-hist/files/a.txt", {"content": "first\n"})
            first = (await api.call("POST", "/api/sessions/s-hist/commit")).json()
            assert first["result"] == "committed" and first["changed"] == ["a.txt"]
            await api.call("PUT", "/api/sessions/s-hist/files/a.txt", {"content": "second\n"})
            await api.call("PUT", "/api/sessions/s-hist/files/b.txt", {"content": "new\n"})
            second = (await api.call("POST", "/api/sessions/s-hist/commit")).json()
            commits = (await api.call("GET", "/api/sessions/s-hist/history")).json()["commits"]
            assert [c["sha"] for c in commits] == [second["commit"], first["commit"]]
            assert commits[0]["files"] == ["a.txt", "b.txt"]
            assert commits[0]["author"] == "api" and commits[0]["message"].startswith(
                "Auto-commit by user api"
            )
            sha = first["commit"]
            old = await api.call("GET", f"/api/sessions/s-hist/history/{sha}/files/a.txt")
            assert old.json() == {"path": "a.txt", "commit": sha, "content": "first\n"}
            diff = (await api.call("GET", f"/api/sessions/s-hist/history/{sha}/diff/a.txt")).json()
            assert "-first\n" in diff["diff"] and "+second\n" in diff["diff"]
            async with YjsClient.connect(p.url, "s-hist/a.txt") as editor:
                await editor.wait_text("second\n")
                one = await api.call(
                    "POST", "/api/sessions/s-hist/restore", {"commit": sha, "path": "a.txt"}
                )
                assert one.json() == {"commit": sha, "restored": ["a.txt"]}
                # A CRDT edit: the connected editor has exactly the old text, not both.
                await editor.wait_text("first\n")
            whole = await api.call("POST", "/api/sessions/s-hist/restore", {"commit": sha})
            assert whole.json()["restored"] == ["b.txt"]  # a.txt already matched
            files = (await api.call("GET", "/api/sessions/s-hist/files")).json()["files"]
            assert [f["path"] for f in files] == ["a.txt"]

    async def test_a_session_without_history_is_not_committed_as_the_cli_says(
        self, tmp_path: Path
    ) -> None:
        """POST .../commit and `collab commit` agree: a session without git history answers
        409 naming how a session gets history, and stays without it."""
        async with api_pool(tmp_path) as (p, api):
            await api.call("PUT", "/api/sessions/s-plain/files/a.txt", {"content": "one\n"})
            refused = await api.call("POST", "/api/sessions/s-plain/commit")
            assert refused.status_code == 409
            assert "s-plain has no git history" in refused.json()["reason"]
            assert "POST /api/sessions" in refused.json()["reason"]
            async with httpx.AsyncClient() as http:
                admin = await http.post(
                    f"{p.http}/admin/sessions/s-plain/commit",
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
            assert admin.status_code == 409, admin.text
            assert refused.json()["reason"] in admin.text
            listed = (await api.call("GET", "/api/sessions")).json()["sessions"]
            assert [s["isGitRepo"] for s in listed if s["id"] == "s-plain"] == [False]


class TestAccess:
    async def test_tokens_are_checked_by_the_router_and_read_only_is_enforced(
        self, tmp_path: Path
    ) -> None:
        async with api_pool(tmp_path, AUTH_SECRET=SECRET) as (p, api):
            # The router checks tokens before any worker sees the request.
            assert (await api.call("GET", "/api/sessions/s-a/files")).status_code == 401
            writer = Api(p.http, api.spec, mint(sub="alice", sessions=["s-a"]))
            reader = Api(p.http, api.spec, mint(sub="bob", sessions=["s-a"], readonly=True))
            other = Api(p.http, api.spec, mint(sub="eve", sessions=["s-b"]))
            ok = await writer.call("PUT", "/api/sessions/s-a/files/a.txt", {"content": "w"})
            assert ok.status_code == 200
            assert (await other.call("GET", "/api/sessions/s-a/files")).status_code == 403
            assert (await reader.call("GET", "/api/sessions/s-a/files/a.txt")).json()[
                "content"
            ] == "w"
            refused = await reader.call("PUT", "/api/sessions/s-a/files/a.txt", {"content": "r"})
            assert refused.status_code == 403 and "read-only" in refused.json()["reason"]
            me = (await reader.call("GET", "/api/whoami")).json()
            assert me == {
                "user": "bob",
                "sessions": ["s-a"],
                "readonly": True,
                "authRequired": True,
            }
            listed = (await other.call("GET", "/api/sessions")).json()["sessions"]
            assert [s["id"] for s in listed] == []  # s-a exists, but eve may not see it
            # The worker checks again: it must not trust whoever can reach its port.
            async with httpx.AsyncClient() as http:
                direct = await http.put(
                    f"{p.workers['w-0'].http}/api/sessions/s-a/files/a.txt",
                    json={"content": "sneaky"},
                )
            assert direct.status_code == 401


class TestRouting:
    async def test_a_router_with_another_ring_is_sent_to_the_owner(self, tmp_path: Path) -> None:
        session = sessions_owned_by("w-0", ["w-0", "w-1"], 1, "api-split")[0]
        async with api_pool(tmp_path) as (p, api):
            await api.call("PUT", f"/api/sessions/{session}/files/a.txt", {"content": "on w-0"})
            only_w1 = RouterSettings(
                host="127.0.0.1",
                port=free_port(),
                workers=(("127.0.0.1", p.workers["w-1"].port),),
                admin_token=TOKEN,
                health_interval_ms=200,
            )
            async with another_router(only_w1) as b:
                via_b = Api(f"http://127.0.0.1:{b.port}", api.spec)
                read = await via_b.call("GET", f"/api/sessions/{session}/files/a.txt")
                assert read.json()["content"] == "on w-0"
                assert b.metrics.registry.get_sample_value("collab_router_redirects_total") == 1
