"""What a join asks of storage: a new session's listing rides on its ownership claim.

A real worker over a real embedded store, behind a recorder that only notes each request in
the order it starts (every byte still goes to the store).
"""

from __future__ import annotations

from pathlib import Path

from tests.support import JsonClient, run_worker, settings_for, wait_until
from worker.settings import StorageSettings
from worker.storage import LocalStore, Store

OWNER = "ownership/sessions/"


class Recorder:
    """Delegates to a real store; ``calls`` holds (op, key or prefix) as each request starts."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def about(self, session: str) -> list[tuple[str, str]]:
        return [(op, k) for op, k in self.calls if f"/{session}/" in k or f"/{session}." in k]

    async def get(self, key: str) -> bytes | None:
        self.calls.append(("get", key))
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> None:
        self.calls.append(("put", key))
        await self.inner.put(key, data)

    async def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        self.calls.append(("get", key))
        return await self.inner.get_versioned(key)

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        self.calls.append(("put_if", key))
        return await self.inner.put_if(key, data, version)

    async def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        await self.inner.delete(key)

    async def list(self, prefix: str) -> list[str]:
        self.calls.append(("list", prefix))
        return await self.inner.list(prefix)

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        self.calls.append(("list", prefix))
        return await self.inner.list_sizes(prefix)

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_new_session_costs_a_claim_and_one_listing(tmp_path: Path) -> None:
    """A session nobody ever owned: the owner record's read and the session's listing go out
    together, then the claim writes the record, and that is all. No metadata read (the listing
    showed none), no second listing of ``snapshots/`` (only owners compact, and there was
    none), no separate listing of the log."""
    recorder = Recorder(LocalStore(tmp_path / "storage"))
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
    async with (
        run_worker(settings, lambda: recorder) as worker,
        JsonClient.connect(worker.url) as c,
    ):
        await c.join("fresh", "alice")
        calls = recorder.about("fresh")
        assert sorted(calls[:2]) == [("get", OWNER + "fresh.json"), ("list", "sessions/fresh/")]
        assert calls[2:] == [("put_if", OWNER + "fresh.json")]


async def test_a_session_owned_before_is_listed_again_after_its_claim(tmp_path: Path) -> None:
    """A session with an owner record (here: released by an idle unload) may have been written
    until that release, so the listing taken alongside the claim is thrown away and the load
    lists the session after the claim; what was written is all there."""
    recorder = Recorder(LocalStore(tmp_path / "storage"))
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"), session_idle_ms=200)
    async with run_worker(settings, lambda: recorder) as worker:
        async with JsonClient.connect(worker.url) as c:
            await c.join("again", "alice")
            await c.file_op(type="create", path="a.txt", content="kept")
        await wait_until(
            lambda: "again" not in worker.manager.sessions, timeout=10, what="idle unload"
        )
        recorder.calls.clear()
        async with JsonClient.connect(worker.url) as c:
            await c.join("again", "bob")
            assert await c.get_file("a.txt") == "kept"
        calls = recorder.about("again")
        claimed = calls.index(("put_if", OWNER + "again.json"))
        assert ("list", "sessions/again/") in calls[claimed:], calls
        assert ("get", "sessions/again/meta.json") in calls[claimed:], calls
