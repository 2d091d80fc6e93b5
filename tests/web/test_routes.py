"""What the router answers for the web workspace, page by page (no browser): the app's page for
every workspace URL, hashed assets cached for good, refusals for names that are not session ids
or paths, and a 503 that says how to build the app when it was not built."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from router.web import WEBAPP, web_routes


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>collab</title>app")
    (tmp_path / "assets" / "app-ABC123.js").write_text("console.log(1)")
    (tmp_path / "assets" / "app-ABC123.css").write_text("body{}")
    return tmp_path


async def get(root: Path, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=Starlette(routes=web_routes(root)))
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
        return await http.get(url)


class TestPages:
    @pytest.mark.parametrize(
        "url", ["/", "/s/demo", "/s/demo/", "/s/demo/a.py", "/s/demo/src/deep/x%20y.py"]
    )
    async def test_every_workspace_url_answers_the_app_page_revalidated_each_time(
        self, built: Path, url: str
    ) -> None:
        r = await get(built, url)
        assert r.status_code == 200
        assert r.text.endswith("app")
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"

    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("/s/-bad", "not a session id"),
            ("/s/a..b", "not a session id"),
            ("/s/demo/.git/config", "reserved"),
            ("/s/demo/a/%2E%2E/b", "path contains"),  # a browser would resolve a plain ..
        ],
    )
    async def test_names_that_are_not_a_session_or_a_path_are_not_found(
        self, built: Path, url: str, says: str
    ) -> None:
        r = await get(built, url)
        assert r.status_code == 404
        assert says in r.text

    async def test_without_a_build_the_page_says_how_to_make_one(self, tmp_path: Path) -> None:
        r = await get(tmp_path / "nothing", "/s/demo/a.py")
        assert r.status_code == 503
        assert "make web" in r.text
        assert r.headers["cache-control"] == "no-store"


class TestAssets:
    async def test_built_files_are_served_with_their_type_and_cached_for_good(
        self, built: Path
    ) -> None:
        js = await get(built, "/assets/app-ABC123.js")
        assert js.status_code == 200 and js.text == "console.log(1)"
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
        css = await get(built, "/assets/app-ABC123.css")
        assert css.headers["content-type"] == "text/css; charset=utf-8"

    @pytest.mark.parametrize(
        "url", ["/assets/missing.js", "/assets/.hidden", "/assets/..%2Findex.html", "/assets/"]
    )
    async def test_nothing_else_is_served(self, built: Path, url: str) -> None:
        assert (await get(built, url)).status_code == 404


async def test_this_checkouts_build_references_only_assets_it_has() -> None:
    """`make web` output (router/webapp): the page names scripts and styles that exist."""
    index = WEBAPP / "index.html"
    if not index.is_file():
        pytest.fail("router/webapp is not built: run `make web`")
    urls = re.findall(r'(?:src|href)="(/assets/[^"]+)"', index.read_text())
    assert sorted(u.rsplit(".", 1)[-1] for u in urls) == ["css", "js"], urls
    for url in urls:
        assert (await get(WEBAPP, url)).status_code == 200, url
