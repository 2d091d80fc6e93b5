"""The web workspace in a real browser, against a real pool (worker processes behind a router
that serves the built app): what two people see when they edit one file, and what the page
shows when files, history, connections and tokens change under it.

Each test starts its own pool and browser and is bounded (Playwright waits 10 s at most per
step; the whole test 60 s). Two of them write the screenshots the README and docs/workspace.md
show (docs/images/), so the pictures are what this code renders.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from tests.conftest import s3_env
from tests.pool import Pool, pool
from tests.s3server import start_s3_server
from tests.support import JsonClient, eventually
from tests.tokens import SECRET, mint
from tests.web.browser import Person, chromium, no_errors, person, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

APP_PY = '''"""A tiny app."""


def greet(name: str) -> str:
    return f"Hello, {name}!"


if __name__ == "__main__":
    print(greet("world"))
'''


@asynccontextmanager
async def pool_and_browser(tmp_path: Path, **env: str) -> AsyncIterator[tuple[Pool, Browser]]:
    """Two workers (so a session can move) and a router; env: more worker environment."""
    worker_env = {"STORAGE_DIR": str(tmp_path / "storage"), **env}
    router: dict[str, Any] = {"auth_secret": env["AUTH_SECRET"]} if "AUTH_SECRET" in env else {}
    async with pool(tmp_path, 2, worker_env, **router) as p, chromium() as browser:
        yield p, browser


async def api(p: Pool, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as http:
        r = await http.request(method, p.http + path, json=body, headers=headers, timeout=10)
    r.raise_for_status()
    return r.json()


@asynccontextmanager
async def json_client(p: Pool, session: str, user: str = "carol") -> AsyncIterator[JsonClient]:
    async with JsonClient.connect(p.url) as j:
        await j.join(session, user)
        yield j


async def json_create(j: JsonClient, path: str, content: str) -> None:
    reply = await j.file_op(type="create", path=path, content=content)
    assert reply["type"] == "fileOperationSuccess", reply


def tree_row(who: Person, path: str) -> Any:
    return who.page.locator(f'.tree .row.file[data-path="{path}"]')


class TestEditing:
    async def test_typing_in_one_page_appears_in_the_other_with_names_on_the_cursors(
        self, tmp_path: Path
    ) -> None:
        async with pool_and_browser(tmp_path) as (p, browser):
            async with json_client(p, "demo") as carol:
                await json_create(carol, "src/app.py", APP_PY)
                await json_create(carol, "src/util.py", "def helper() -> None:\n    pass\n")
                await json_create(carol, "README.md", "# demo\n")
            url = f"{p.http}/s/demo/src/app.py"
            alice = await person(browser, "alice", url)
            bob = await person(browser, "bob", url)
            for who in (alice, bob):
                await who.wait_connected()
                await who.wait_text(APP_PY.rstrip("\n") + "\n")

            await alice.type_at_end("# alice was here")
            await bob.wait_text(APP_PY + "# alice was here")
            # Bob selects a line: Alice sees his selection, and his name on his cursor.
            await bob.page.locator(".cm-line", has_text="def greet").click()
            await bob.page.keyboard.press("End")
            await bob.page.keyboard.press("Shift+Home")
            await expect(alice.page.locator(".cm-ySelectionInfo")).to_have_text("bob")
            await expect(alice.page.locator(".cm-ySelection").first).to_be_visible()
            await expect(bob.page.locator(".cm-ySelectionInfo")).to_have_text("alice")
            # Who is here: in the top bar, and beside the file each has open.
            await expect(alice.page.locator(".people .person:not(.me) .name")).to_have_text(["bob"])
            await expect(alice.page.locator(".people .me")).to_contain_text("alice (you)")
            await expect(tree_row(alice, "src/app.py").locator(".here .avatar")).to_have_count(1)
            # The tree is the session's index (folders first); Python is highlighted as Python.
            paths = alice.page.locator(".tree .row.file")
            await expect(paths).to_have_count(3)
            assert await paths.evaluate_all("rows => rows.map(r => r.dataset.path)") == [
                "src/app.py",
                "src/util.py",
                "README.md",
            ]
            await expect(alice.page.locator(".editor-head .lang")).to_have_text("python")
            keyword = alice.page.locator(".cm-line span", has_text=re.compile("^def$")).first
            await expect(keyword).to_be_visible()
            assert await keyword.evaluate(
                "e => getComputedStyle(e).color"
            ) != await alice.page.locator(".cm-content").evaluate("e => getComputedStyle(e).color")
            await screenshot(alice.page, "workspace.png")

            # What the pages typed is what every other client reads.
            async with json_client(p, "demo") as carol:
                assert await carol.get_file("src/app.py") == APP_PY + "# alice was here"
            no_errors(alice, bob)

    async def test_a_json_clients_update_appears_in_both_pages(self, tmp_path: Path) -> None:
        async with pool_and_browser(tmp_path) as (p, browser):
            async with json_client(p, "mixed") as carol:
                await json_create(carol, "notes.txt", "one\n")
                url = f"{p.http}/s/mixed/notes.txt"
                alice = await person(browser, "alice", url)
                bob = await person(browser, "bob", url)
                for who in (alice, bob):
                    await who.wait_text("one\n")
                reply = await carol.file_op(type="update", path="notes.txt", content="one\ntwo\n")
                assert reply["type"] == "fileOperationSuccess", reply
                await alice.wait_text("one\ntwo\n")
                await bob.wait_text("one\ntwo\n")
                await bob.type_at_end("three")
                await alice.wait_text("one\ntwo\nthree")
                await eventually(
                    lambda: _has(carol, "notes.txt", "one\ntwo\nthree"), what="JSON sees bob"
                )
            no_errors(alice, bob)


async def _has(j: JsonClient, path: str, text: str) -> bool:
    return await j.get_file(path) == text


class TestFiles:
    async def test_the_tree_and_the_editor_follow_a_rename_by_a_json_client(
        self, tmp_path: Path
    ) -> None:
        async with pool_and_browser(tmp_path) as (p, browser):
            async with json_client(p, "moves") as carol:
                await json_create(carol, "old.py", "x = 1\n")
                url = f"{p.http}/s/moves/old.py"
                alice = await person(browser, "alice", url)
                bob = await person(browser, "bob", f"{p.http}/s/moves")
                await alice.wait_text("x = 1\n")
                await expect(tree_row(bob, "old.py")).to_be_visible()
                reply = await carol.file_op(type="rename", oldPath="old.py", newPath="pkg/new.py")
                assert reply["type"] == "fileOperationSuccess", reply
                for who in (alice, bob):
                    await expect(tree_row(who, "pkg/new.py")).to_be_visible()
                    await expect(tree_row(who, "old.py")).to_have_count(0)
                # Alice had the file open: her editor moved with it, and her edits land there.
                await expect(alice.page).to_have_url(f"{p.http}/s/moves/pkg/new.py")
                await expect(tree_row(alice, "pkg/new.py")).to_have_class(re.compile("current"))
                await alice.wait_text("x = 1\n")
                await alice.type_at_end("y = 2")
                await eventually(
                    lambda: _has(carol, "pkg/new.py", "x = 1\ny = 2"), what="edit after rename"
                )
            no_errors(alice, bob)

    async def test_files_are_created_renamed_and_deleted_from_the_tree(
        self, tmp_path: Path
    ) -> None:
        async with pool_and_browser(tmp_path) as (p, browser):
            alice = await person(browser, "alice", f"{p.http}/s/tree")
            bob = await person(browser, "bob", f"{p.http}/s/tree")
            await alice.wait_connected()
            await alice.page.get_by_role("button", name="New file").click()
            await alice.page.locator(".path-input").fill("docs/guide.md")
            await alice.page.locator(".path-input").press("Enter")
            await expect(alice.page).to_have_url(f"{p.http}/s/tree/docs/guide.md")
            await alice.wait_connected()
            await alice.type_at_end("# Guide")
            await expect(tree_row(bob, "docs/guide.md")).to_be_visible()
            await tree_row(bob, "docs/guide.md").click()
            await bob.wait_text("# Guide")

            row = tree_row(alice, "docs/guide.md")
            await row.hover()
            await row.get_by_role("button", name="Rename docs/guide.md").click()
            await alice.page.locator(".path-input").fill("docs/howto.md")
            await alice.page.locator(".path-input").press("Enter")
            for who in (alice, bob):
                await expect(tree_row(who, "docs/howto.md")).to_be_visible()
                await expect(tree_row(who, "docs/guide.md")).to_have_count(0)
                await expect(who.page).to_have_url(f"{p.http}/s/tree/docs/howto.md")
                await who.wait_text("# Guide")

            alice.page.once("dialog", lambda dialog: dialog.accept())
            row = tree_row(alice, "docs/howto.md")
            await row.hover()
            await row.get_by_role("button", name="Delete docs/howto.md").click()
            for who in (alice, bob):
                await expect(who.page.locator(".tree .row.file")).to_have_count(0)
                await expect(who.page.locator(".placeholder")).to_be_visible()
            async with json_client(p, "tree") as carol:
                assert await carol.get_files() == []
            no_errors(alice, bob)


class TestHistory:
    async def test_the_panel_lists_an_auto_commit_and_restore_brings_the_old_text_back(
        self, tmp_path: Path
    ) -> None:
        # With tokens, so the commits are authored by the people who typed.
        async with pool_and_browser(tmp_path, COOLDOWN_MS="300", AUTH_SECRET=SECRET) as (
            p,
            browser,
        ):
            token = mint(sub="alice", sessions=["story"])
            await api(p, "POST", "/api/sessions", {"id": "story"}, token)
            url = f"{p.http}/s/story/story.md"
            alice = await person(browser, "alice", f"{url}#token={token}", viewport=(1400, 760))
            bob = await person(browser, "bob", f"{url}#token={mint(sub='bob', sessions='*')}")
            for who in (alice, bob):
                await who.wait_connected()
            await alice.type_at_end("Once upon a time.\n")
            await bob.wait_text("Once upon a time.\n")
            first = await committed(p, token, "story", "story.md", "Once upon a time.\n")

            await alice.page.get_by_role("button", name="History").click()
            entry = alice.page.locator(f'.commit[data-sha="{first}"]')
            await alice.type_at_end("The end.\n")
            await bob.wait_text("Once upon a time.\nThe end.\n")
            await committed(p, token, "story", "story.md", "Once upon a time.\nThe end.\n")

            await expect(entry).to_contain_text("Auto-commit by user alice")
            await entry.locator(".commit-head").click()
            line = entry.locator('li[data-path="story.md"]')
            await line.get_by_role("button", name="Diff").click()
            await expect(line.locator(".diff .add")).to_have_text(["+The end."])
            await expect(line.locator(".diff .ctx")).to_have_text([" Once upon a time."])
            await alice.page.get_by_role("button", name="Refresh history").click()
            await expect(alice.page.locator(".commit")).to_have_count(3)  # api, first, second
            await screenshot(alice.page, "history.png")

            alice.page.once("dialog", lambda dialog: dialog.accept())
            await line.get_by_role("button", name="Restore").click()
            await alice.wait_text("Once upon a time.\n")
            await bob.wait_text("Once upon a time.\n")
            await expect(alice.page.locator(".toast")).to_contain_text("Restored story.md")
            no_errors(alice, bob)


async def committed(p: Pool, token: str, session: str, path: str, text: str) -> str:
    """The sha of the first commit (newest first) in which ``path`` reads ``text``."""

    async def find() -> str | None:
        commits = (await api(p, "GET", f"/api/sessions/{session}/history", token=token))["commits"]
        for c in commits:
            if path in c["files"]:
                at = f"/api/sessions/{session}/history/{c['sha']}/files/{path}"
                if (await api(p, "GET", at, token=token))["content"] == text:
                    sha: str = c["sha"]
                    return sha
        return None

    return await eventually(find, timeout=15, what=f"a commit of {path} = {text!r}", interval=0.2)


# Records every state the status badge and the banner go through (a reconnection can be too
# quick to catch by polling).
RECORD_STATES = """
new MutationObserver(() => {
  const status = document.querySelector('.status')
  const banner = document.querySelector('.banner')
  if (!status) return
  const seen = (window.__states ??= [])
  const now = `${status.dataset.state}|${banner && !banner.hidden ? banner.textContent : ''}`
  if (seen[seen.length - 1] !== now) seen.push(now)
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true })
"""


class TestConnection:
    async def test_a_drained_worker_shows_reconnecting_and_the_page_comes_back_by_itself(
        self, tmp_path: Path
    ) -> None:
        async with pool_and_browser(tmp_path) as (p, browser):
            url = f"{p.http}/s/moving/a.txt"
            alice = await person(browser, "alice", url, tolerate=("WebSocket",))
            await alice.page.evaluate(RECORD_STATES)
            bob = await person(browser, "bob", url, tolerate=("WebSocket",))
            for who in (alice, bob):
                await who.wait_connected()
            await alice.type_at_end("before")
            await bob.wait_text("before")
            owner = p.owner("moving")
            assert owner is not None
            await p.admin("POST", f"/admin/workers/{owner}/drain")
            await eventually(lambda: _owner_changed(p, "moving", owner), what="the session moved")
            # The session moves as soon as one client reconnects; the other's 'draining' close
            # may still be on its way, and its page still connected to the old worker then.
            await alice.page.wait_for_function(
                "window.__states.some(s => s.startsWith('reconnecting|') && s.includes('draining'))"
            )
            for who in (alice, bob):
                await who.wait_connected()
            states: list[str] = await alice.page.evaluate("window.__states")
            assert any(s.startswith("reconnecting|") and "draining" in s for s in states), states
            assert states[-1] == "connected|", states
            await alice.type_at_end(" after")
            await bob.wait_text("before after")
            no_errors(alice, bob)

    @pytest.mark.s3
    async def test_an_unavailable_session_is_explained_and_the_page_connects_once_it_is_back(
        self, tmp_path: Path
    ) -> None:
        """Storage down: the worker refuses to load the session (1013) rather than serve it
        empty; the page says so, keeps retrying, and connects by itself once storage is back."""
        with start_s3_server() as s3:
            env = s3_env(s3.store_kwargs("web-outage"))
            async with pool(tmp_path, 1, env) as p, chromium() as browser:
                await s3.astop()
                url = f"{p.http}/s/outage/a.txt"
                alice = await person(browser, "alice", url, tolerate=("WebSocket", "503"))
                await expect(alice.page.locator(".banner")).to_contain_text("unavailable")
                await expect(alice.page.locator(".banner")).to_contain_text("retrying")
                status = alice.page.locator(".status")
                await expect(status).to_have_attribute("data-state", "reconnecting")
                await s3.astart()
                await alice.wait_connected()
                await expect(alice.page.locator(".banner")).to_be_hidden()
                await alice.type_at_end("back")
                async with json_client(p, "outage") as carol:
                    await eventually(lambda: _has(carol, "a.txt", "back"), what="the edit")
                no_errors(alice)

    async def test_an_edit_over_a_limit_is_explained_and_the_others_go_on(
        self, tmp_path: Path
    ) -> None:
        """A paste over MAX_UPDATE_BYTES: the worker refuses it (4413); the page says it was
        too large and not saved, and stops; the other person edits on."""
        async with pool_and_browser(tmp_path, MAX_UPDATE_BYTES="1024") as (p, browser):
            url = f"{p.http}/s/limited/a.txt"
            alice = await person(browser, "alice", url, tolerate=("WebSocket",))
            bob = await person(browser, "bob", url)
            for who in (alice, bob):
                await who.wait_connected()
            await alice.type_at_end("small")
            await bob.wait_text("small")
            await alice.page.keyboard.insert_text("x" * 3000)
            await expect(alice.page.locator(".status")).to_have_attribute("data-state", "refused")
            banner = alice.page.locator(".banner")
            await expect(banner).to_contain_text("too large and was not saved")
            await expect(banner).to_contain_text("exceeds MAX_UPDATE_BYTES (1024)")
            await bob.type_at_end(" still")
            async with json_client(p, "limited") as carol:
                await eventually(lambda: _has(carol, "a.txt", "small still"), what="bob's edit")
            assert await bob.text() == "small still"
            no_errors(alice, bob)


async def _owner_changed(p: Pool, session: str, old: str) -> bool:
    return p.owner(session) not in (None, old)


class TestAccess:
    async def test_the_token_from_the_fragment_is_used_everywhere_and_refusals_are_explained(
        self, tmp_path: Path
    ) -> None:
        async with pool_and_browser(tmp_path, AUTH_SECRET=SECRET) as (p, browser):
            alice_token = mint(sub="alice", sessions=["club"])
            alice = await person(browser, "ignored", f"{p.http}/s/club/a.txt#token={alice_token}")
            await alice.wait_connected()
            await expect(alice.page).to_have_url(f"{p.http}/s/club/a.txt")  # fragment dropped
            await expect(alice.page.locator(".people .me")).to_contain_text("alice (you)")
            await alice.type_at_end("members only")
            files = await api(p, "GET", "/api/sessions/club/files/a.txt", token=alice_token)
            assert files["content"] == "members only"

            # A valid token for another session: the page says access is denied, and stops.
            eve = await person(
                browser,
                "eve",
                f"{p.http}/s/club/a.txt#token={mint(sub='eve', sessions=['other'])}",
                tolerate=("403", "WebSocket"),
            )
            await expect(eve.page.locator(".status")).to_have_attribute("data-state", "refused")
            await expect(eve.page.locator(".banner")).to_contain_text("Access denied")
            await expect(eve.page.locator(".banner")).to_contain_text("club")

            # No token at all: nothing works until one is given; then everything does.
            mallory = await person(browser, "mallory", f"{p.http}/s/club/a.txt", tolerate=("401",))
            dialog = mallory.page.locator("#token-dialog")
            await expect(dialog).to_be_visible()
            await expect(mallory.page.locator(".cm-content")).to_have_count(0)
            await dialog.locator("input").fill(alice_token)
            await dialog.get_by_role("button", name="Use this token").click()
            await mallory.wait_connected()
            await mallory.wait_text("members only")

            # An expired token: the form again, saying why.
            expired = mint(sub="alice", sessions=["club"], expires_in=-60)
            late = await person(
                browser, "late", f"{p.http}/s/club/a.txt#token={expired}", tolerate=("401",)
            )
            await expect(late.page.locator("#token-dialog")).to_contain_text("expired")
            no_errors(alice, eve, mallory, late)

    async def test_a_read_only_token_opens_a_read_only_editor(self, tmp_path: Path) -> None:
        async with pool_and_browser(tmp_path, AUTH_SECRET=SECRET) as (p, browser):
            writer = mint(sub="alice", sessions=["ro"])
            reader = mint(sub="bob", sessions=["ro"], readonly=True)
            await api(p, "PUT", "/api/sessions/ro/files/a.txt", {"content": "hello"}, writer)
            alice = await person(browser, "alice", f"{p.http}/s/ro/a.txt#token={writer}")
            bob = await person(browser, "bob", f"{p.http}/s/ro/a.txt#token={reader}")
            for who in (alice, bob):
                await who.wait_connected()
                await who.wait_text("hello")
            await expect(bob.page.locator(".topbar .badge.readonly")).to_have_text("read-only")
            await expect(bob.page.get_by_role("button", name="New file")).to_have_count(0)
            assert await bob.page.locator(".cm-content").get_attribute("aria-readonly") == "true"
            await bob.type_at_end(" from bob")
            await alice.type_at_end(" from alice")
            await bob.wait_text("hello from alice")
            await alice.wait_text("hello from alice")
            no_errors(alice, bob)


class TestStartPage:
    async def test_the_start_page_lists_sessions_and_creates_new_ones(self, tmp_path: Path) -> None:
        async with pool_and_browser(tmp_path) as (p, browser):
            await api(p, "POST", "/api/sessions", {"id": "listed"})
            await api(p, "PUT", "/api/sessions/listed/files/a.txt", {"content": "x"})
            alice = await person(browser, "alice", f"{p.http}/", viewport=(1100, 520))
            await expect(alice.page.locator(".sessions a", has_text="listed")).to_be_visible()
            await expect(alice.page.locator(".sessions tr", has_text="listed")).to_contain_text(
                "yes"  # it keeps a history
            )
            await screenshot(alice.page, "start.png")

            await alice.page.get_by_label("Session name").fill("fresh")
            await alice.page.get_by_role("button", name="Create").click()
            await expect(alice.page).to_have_url(f"{p.http}/s/fresh")
            await alice.wait_connected()
            history = await api(p, "GET", "/api/sessions/fresh/history")
            assert history == {"commits": []}  # a git session: it has a history

            await alice.page.goto(f"{p.http}/")
            await alice.page.get_by_role("button", name="New session").click()
            await expect(alice.page).to_have_url(re.compile(rf"{re.escape(p.http)}/s/[^/]+$"))
            await alice.wait_connected()
            no_errors(alice)
