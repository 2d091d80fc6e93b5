"""A real browser for the web workspace: Debian's chromium driven by Playwright.

Playwright's own browser download cannot work on these machines, so the browser is the system's
``/usr/bin/chromium`` (``.ci/run`` installs it). Each person is a separate browser context (own
storage, own connections), as two people on two machines would be. Every wait is bounded: a
default timeout of 10 s per action and assertion, and a whole-test timeout in the tests.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from router.web import WEBAPP

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)
ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"

# The editor's text as a person reads it: the lines, without the other people's cursor labels
# (y-codemirror.next draws them inside the lines).
_EDITOR_TEXT = """() => {
  const lines = [...document.querySelectorAll('.cm-content .cm-line')]
  return lines.map((line) => {
    const copy = line.cloneNode(true)
    copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer').forEach((e) => e.remove())
    return copy.textContent
  }).join('\\n')
}"""


def require_build() -> None:
    if not (WEBAPP / "index.html").is_file():
        pytest.fail("the web workspace is not built (router/webapp): run `make web`")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")


@dataclass
class Person:
    """One person's page, and what went wrong in it (uncaught errors fail the test)."""

    name: str
    page: Page
    errors: list[str] = field(default_factory=list)

    async def text(self) -> str:
        text: str = await self.page.evaluate(_EDITOR_TEXT)
        return text

    async def wait_text(self, expected: str, timeout_ms: int = TIMEOUT_MS) -> None:
        await self.page.wait_for_function(
            f"(expected) => ({_EDITOR_TEXT})() === expected", arg=expected, timeout=timeout_ms
        )

    async def wait_connected(self) -> None:
        await expect(self.page.locator(".status")).to_have_attribute("data-state", "connected")

    async def type_at_end(self, text: str) -> None:
        await self.page.locator(".cm-content").click()
        await self.page.keyboard.press("Control+End")
        await self.page.keyboard.type(text)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    require_build()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=FLAGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def person(
    browser: Browser,
    name: str,
    url: str,
    *,
    viewport: tuple[int, int] = (1280, 720),
    tolerate: tuple[str, ...] = (),
) -> Person:
    """A new browser context for ``name`` (the name the page keeps without a token) at ``url``.
    Console errors fail the test unless they contain one of ``tolerate`` (a WebSocket a test
    closes on purpose, a refused token)."""
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(TIMEOUT_MS)
    await context.add_init_script(f"localStorage.setItem('collab.name', {name!r})")
    page = await context.new_page()
    who = Person(name, page)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not any(t in message.text for t in tolerate):
            who.errors.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: who.errors.append(f"page error: {error}"))
    await page.goto(url)
    return who


def no_errors(*people: Person) -> None:
    errors = [f"{p.name}: {e}" for p in people for e in p.errors]
    assert not errors, "\n".join(errors)


async def screenshot(page: Page, name: str) -> Path:
    """A picture for the docs (docs/images), of what the page really shows.

    The picture is always taken (so the page could be drawn); it replaces the one in docs/
    when that is missing or when ``COLLAB_UPDATE_SCREENSHOTS=1`` (``make screenshots``), so an
    ordinary test run leaves the checkout clean (commit ids and times differ every run).
    """
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    taken = await page.screenshot()
    assert taken.startswith(b"\x89PNG"), "the browser returned no picture"
    if not path.exists() or os.environ.get("COLLAB_UPDATE_SCREENSHOTS") == "1":
        path.write_bytes(taken)
    return path
