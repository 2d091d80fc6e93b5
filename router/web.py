"""The web workspace: the router serves the browser app built from ``web/`` into ``router/webapp``.

``GET /``, ``/s/{session}`` and ``/s/{session}/{path}`` answer the app's ``index.html`` (the
app reads its own location); ``/assets/{name}`` the built files. Asset names carry a hash of
their content, so they are cached for good while ``index.html`` is revalidated on every load.

The build is package data (pyproject.toml), made by ``make web`` or the image's node stage, so
nothing here needs Node at run time. A checkout that skipped the build answers ``/`` with a 503
page that says how to build it, rather than a bare 404. Files are read per request: ``make web``
while a router runs takes effect on the next page load.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from contract.ids import is_name
from contract.paths import PathRefused, check_path

WEBAPP = Path(__file__).with_name("webapp")

# A built asset: one flat directory, so a name without '/' cannot leave it.
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The app loads only its own scripts and styles, and talks only to this origin (HTTP API and the
# y-websocket endpoint; CSP 3 lets 'self' match ws:/wss: on the same host). CodeMirror adds
# its styles at run time, hence 'unsafe-inline' for styles only.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def web_routes(webapp: Path = WEBAPP) -> list[Route]:
    site = WebApp(webapp)
    return [
        Route("/", site.page),
        Route("/s/{session}", site.page),
        Route("/s/{session}/{path:path}", site.page),
        Route("/assets/{name}", site.asset),
    ]


class WebApp:
    """The built app in ``root``: ``index.html`` and ``assets/``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def page(self, request: Request) -> Response:
        session = request.path_params.get("session")
        path = request.path_params.get("path") or None
        if session is not None and not is_name(session):
            return _notice(404, "Not Found", f"{session!r} is not a session id.")
        if path is not None:
            try:
                check_path(path)
            except PathRefused as exc:
                return _notice(404, "Not Found", f"{path!r} is not a file path: {exc}.")
        index = self.root / "index.html"
        try:
            body = index.read_bytes()
        except FileNotFoundError:
            return _not_built()
        return Response(body, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        file = self.root / "assets" / name
        if not _ASSET_NAME.fullmatch(name) or not file.is_file():
            return Response("no such asset\n", status_code=404, media_type="text/plain")
        return FileResponse(
            file,
            media_type=_MEDIA_TYPES.get(file.suffix, "application/octet-stream"),
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )


def _not_built() -> Response:
    return _notice(
        503,
        "The web workspace is not built",
        "This router has no built web app (router/webapp/index.html is missing). "
        "Build it from the repository with `make web` (needs Node.js 20 or later), "
        "then reload this page. The WebSocket endpoints and the HTTP API work without it.",
    )


def _notice(status: int, title: str, text: str) -> Response:
    title, text = html.escape(title), html.escape(text)
    page = (
        f"<!doctype html><meta charset=utf-8><title>{title}</title>"
        "<body style='font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>{title}</h1><p>{text}</p>"
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})
