"""Auto-commit of git sessions: cooldown, authorship, exclusions, forced commits."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import structlog

from tests.support import JsonClient, eventually, run_worker, settings_for, wait_until
from worker.git_branch import sync_packs
from worker.settings import Settings, StorageSettings
from worker.storage import LocalStore, SessionMeta, SessionStore


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


async def history(storage: Path, session: str, where: Path) -> Path:
    store = SessionStore(LocalStore(storage), "reader")
    await sync_packs(store, session, where)
    ref = await store.read_ref(session)
    assert ref is not None
    git(where, "update-ref", "refs/heads/main", ref[0])
    git(where, "symbolic-ref", "HEAD", "refs/heads/main")
    return where


async def make_git_session(storage: Path, session: str) -> None:
    await SessionStore(LocalStore(storage), "setup").put_meta(
        session, SessionMeta.new(is_git_repo=True)
    )


def git_settings(tmp_path: Path, **overrides: object) -> Settings:
    """A worker on local storage under ``tmp_path``, its git cache there too."""
    kw: dict[str, object] = {"workspace_dir": tmp_path / "ws", "cooldown_ms": 3_600_000}
    kw.update(overrides)
    return settings_for(StorageSettings(storage_dir=tmp_path / "storage"), **kw)


async def ref_of(storage: Path, session: str) -> str | None:
    ref = await SessionStore(LocalStore(storage), "reader").read_ref(session)
    return None if ref is None else ref[0]


class TestAutoCommit:
    async def test_after_the_cooldown_the_last_editor_commits_with_co_authors(
        self, tmp_path: Path
    ) -> None:
        storage = tmp_path / "storage"
        await make_git_session(storage, "g")
        settings = git_settings(tmp_path, cooldown_ms=1_000)
        async with (
            run_worker(settings),
            JsonClient.connect(f"ws://127.0.0.1:{settings.port}") as bob,
            JsonClient.connect(f"ws://127.0.0.1:{settings.port}") as alice,
        ):
            await bob.join("g", "bob")
            await alice.join("g", "alice")
            await bob.file_op(type="create", path="src/b.py", content="b = 1\n")
            await alice.file_op(type="create", path="src/a.py", content="a = 1\n")
            await alice.file_op(type="create", path=".collaboration/x", content="no")
            await asyncio.sleep(0.1)  # time passes, but far less than the cooldown: no commit
            assert await ref_of(storage, "g") is None
            await eventually(lambda: ref_of(storage, "g"), 5, "a commit after the cooldown")
        repo = await history(storage, "g", tmp_path / "check.git")
        body = git(repo, "log", "-1", "--format=%an%n%B")
        assert body.startswith("alice\nAuto-commit by user alice\n\nChanges: src/a.py, src/b.py")
        assert "Co-authored-by: bob <bob@users.collab.invalid>" in body
        assert git(repo, "ls-tree", "-r", "--name-only", "HEAD").split() == [
            "src/a.py",
            "src/b.py",
        ]
        git(repo, "fsck", "--strict")

    async def test_an_edit_during_the_cooldown_restarts_it(self, tmp_path: Path) -> None:
        storage = tmp_path / "storage"
        await make_git_session(storage, "g")
        settings = git_settings(tmp_path, cooldown_ms=1_500)
        async with run_worker(settings), JsonClient.connect(f"ws://127.0.0.1:{settings.port}") as c:
            await c.join("g", "alice")
            content = ""
            for i in range(8):  # 200 ms apart: each well inside the last one's cooldown
                content += f"{i}\n"
                await c.file_op(type="update" if i else "create", path="a.txt", content=content)
                await asyncio.sleep(0.2)  # pacing: the point is edits spread over time
                assert await ref_of(storage, "g") is None, f"committed during edit {i}"
            await eventually(lambda: ref_of(storage, "g"), 5, "a commit after the cooldown")

    async def test_a_session_without_git_history_is_never_committed(self, tmp_path: Path) -> None:
        storage = tmp_path / "storage"
        settings = git_settings(tmp_path, cooldown_ms=100)
        async with run_worker(settings) as w, JsonClient.connect(w.url) as c:
            await c.join("plain", "alice")
            await c.file_op(type="create", path="a.txt", content="x")
            await asyncio.sleep(0.6)  # six cooldowns pass: proves no commit ever comes
            assert await ref_of(storage, "plain") is None
            assert not (tmp_path / "ws" / "plain").exists()

    async def test_a_forced_commit_returns_its_id_then_nothing_changed(
        self, tmp_path: Path
    ) -> None:
        storage = tmp_path / "storage"
        await make_git_session(storage, "g")
        settings = git_settings(tmp_path, cooldown_ms=3_600_000, admin_token="t")
        auth = {"authorization": "Bearer t"}
        async with (
            run_worker(settings) as w,
            JsonClient.connect(w.url) as c,
            httpx.AsyncClient() as http,
        ):
            await c.join("g", "alice")
            await c.file_op(type="create", path="a.txt", content="x")
            first = (await http.post(f"{w.http}/admin/sessions/g/commit", headers=auth)).json()
            assert first["result"] == "committed" and first["commit"] == await ref_of(storage, "g")
            assert first["changed"] == ["a.txt"]
            again = (await http.post(f"{w.http}/admin/sessions/g/commit", headers=auth)).json()
            assert again == {**again, "result": "nothing changed", "commit": None}
            missing = await http.post(f"{w.http}/admin/sessions/nope/commit", headers=auth)
            assert missing.status_code == 404
            metrics = (await http.get(f"{w.http}/metrics")).text
            assert 'collab_commits_total{outcome="ok"} 1.0' in metrics
            assert 'collab_commits_total{outcome="unchanged"} 1.0' in metrics
            assert "collab_commit_seconds_count 2.0" in metrics

    async def test_an_idle_session_is_committed_before_it_unloads(self, tmp_path: Path) -> None:
        storage = tmp_path / "storage"
        await make_git_session(storage, "g")
        # The cooldown (an hour by default here) is far longer than the session stays loaded.
        settings = git_settings(tmp_path, session_idle_ms=200)
        async with run_worker(settings) as w:
            async with JsonClient.connect(w.url) as c:
                await c.join("g", "carol")
                await c.file_op(type="create", path="notes.md", content="# kept\n")
            await wait_until(lambda: "g" not in w.manager.sessions, 5, "session unloaded")
        repo = await history(storage, "g", tmp_path / "check.git")
        assert git(repo, "log", "-1", "--format=%an").strip() == "carol"
        assert git(repo, "show", "HEAD:notes.md") == "# kept\n"

    async def test_a_sessions_git_cache_goes_when_it_leaves_and_stale_ones_at_start(
        self, tmp_path: Path
    ) -> None:
        """The local cache under WORKSPACE_DIR lives as long as the session on this worker;
        caches a killed worker left behind are removed when it starts again."""
        storage = tmp_path / "storage"
        await make_git_session(storage, "g")
        settings = git_settings(tmp_path, session_idle_ms=300, cooldown_ms=200)
        stale = settings.git_cache("killed-earlier")
        stale.mkdir(parents=True)
        (stale / "HEAD").write_text("ref: refs/heads/main\n")
        async with run_worker(settings) as w:
            assert not stale.parent.exists()
            async with JsonClient.connect(w.url) as c:
                await c.join("g", "erin")
                await c.file_op(type="create", path="e.txt", content="cached\n")
                await eventually(lambda: ref_of(storage, "g"), 10, "the first commit")
                assert (settings.git_cache("g") / "objects").is_dir()
            await wait_until(lambda: "g" not in w.manager.sessions, 5, "session unloaded")
            await wait_until(
                lambda: list(settings.git_caches.iterdir()) == [], 5, "the cache removed"
            )

    async def test_a_drain_commits_pending_edits_before_handing_off(self, tmp_path: Path) -> None:
        storage = tmp_path / "storage"
        await make_git_session(storage, "g")
        settings = git_settings(tmp_path, cooldown_ms=3_600_000)
        async with run_worker(settings) as w, JsonClient.connect(w.url) as c:
            await c.join("g", "dave")
            await c.file_op(type="create", path="d.txt", content="drained\n")
            await w.manager.handoff.drain(5)
            assert await ref_of(storage, "g") is not None
        repo = await history(storage, "g", tmp_path / "check.git")
        assert git(repo, "log", "-1", "--format=%an").strip() == "dave"


class TestFailingCommits:
    async def test_any_failure_is_logged_counted_and_backed_off(self, tmp_path: Path) -> None:
        """A damaged local repository (its objects gone, its list of synced packs kept) makes
        dulwich raise KeyError, none of the storage or git errors: still logged with its
        traceback, counted as outcome=error, and the next automatic attempt waits longer."""
        storage = tmp_path / "storage"
        await make_git_session(storage, "dmg")
        settings = git_settings(tmp_path, cooldown_ms=300)
        async with (
            run_worker(settings) as worker,
            JsonClient.connect(f"ws://127.0.0.1:{settings.port}") as alice,
        ):
            await alice.join("dmg", "alice")
            await alice.file_op(type="create", path="a.txt", content="one")
            await eventually(lambda: ref_of(storage, "dmg"), 10, "the first commit")
            # The local cache is damaged: every object gone, its list of synced packs kept.
            for obj in (settings.git_cache("dmg") / "objects").rglob("*"):
                if obj.is_file():
                    obj.unlink()
            metrics = worker.app.state.metrics
            with structlog.testing.capture_logs() as logs:
                await alice.file_op(type="update", path="a.txt", content="two")
                await wait_until(
                    lambda: metrics.value("collab_commits_total", outcome="error") >= 1,
                    10,
                    "a failed commit",
                )
                failed_at = time.monotonic()
            failures = [e for e in logs if e["event"] == "commit_failed"]
            assert failures and "KeyError" in failures[0]["error"]
            assert failures[0]["exc_info"] is not None  # the traceback goes with it
            retry = worker.manager.autocommit.retry_at("dmg") - failed_at
            assert retry >= 2 * settings.cooldown_ms / 1000 * 0.9  # not every cooldown
            await asyncio.sleep(settings.cooldown_ms * 1.5 / 1000)  # past one plain cooldown
            assert metrics.value("collab_commits_total", outcome="error") == 1
