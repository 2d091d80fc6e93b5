"""Limits with clear errors: MAX_UPDATE_BYTES and MAX_DOC_BYTES (worker/limits.py).

An update that would pass a limit is refused whole: not applied, not relayed, not stored. The
y-websocket client is closed with 4413 and a reason naming the limit and its value; a JSON client
gets the protocol's error with the same reason and keeps its connection. The session and its
other clients go on, and nothing acknowledged before is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog
from pycrdt import Doc, Text

from contract.close_codes import MAX_REASON_BYTES, TOO_LARGE
from contract.env import ConfigError
from tests.support import JsonClient, RunningWorker, YjsClient, run_worker, settings_for, wait_until
from worker.limits import DocSize, Limit, Limits, Refusal, decide
from worker.settings import Settings, StorageSettings

UPDATE_LIMIT = 2048


def refusals(worker: RunningWorker, limit: str) -> float:
    return float(worker.app.state.metrics.value("collab_limit_refusals_total", limit=limit))


@pytest.fixture
def storage(tmp_path: Path) -> StorageSettings:
    return StorageSettings(storage_dir=tmp_path / "storage")


@pytest.fixture
async def limited(storage: StorageSettings) -> AsyncIterator[RunningWorker]:
    """A worker with a small update limit and a document limit far above it."""
    settings = settings_for(storage, max_update_bytes=UPDATE_LIMIT, max_doc_bytes=1 << 20)
    async with run_worker(settings) as running:
        yield running


async def synced(*clients: YjsClient) -> None:
    for client in clients:
        await asyncio.wait_for(client.synced.wait(), 5)


class TestDecide:
    """The decision alone: sizes in, a Refusal (or None) out."""

    limits = Limits(max_update_bytes=100, max_doc_bytes=1000)

    @staticmethod
    def never() -> int:
        raise AssertionError("measured when the estimate was enough")

    def test_an_update_over_max_update_bytes_is_refused_with_its_size(self) -> None:
        refusal = decide(self.limits, DocSize(0), 101, measure=self.never, adds=lambda: True)
        assert refusal == Refusal("update", "MAX_UPDATE_BYTES", 100, 101)
        assert refusal.reason == "update of 101 bytes exceeds MAX_UPDATE_BYTES (100)"

    def test_under_the_estimate_nothing_is_measured(self) -> None:
        size = DocSize(500)
        size.grew(400)
        assert decide(self.limits, size, 100, measure=self.never, adds=lambda: True) is None

    def test_an_estimate_over_the_limit_is_checked_exactly_and_refreshed(self) -> None:
        size = DocSize(500)
        size.grew(450)  # deletions, say: the true size is lower
        assert decide(self.limits, size, 100, measure=lambda: 600, adds=lambda: True) is None
        assert (size.exact, size.since, size.estimate) == (600, 0, 600)

    def test_growth_past_the_exact_size_is_refused_with_the_size_it_would_reach(self) -> None:
        size = DocSize(500)
        size.grew(450)
        refusal = decide(self.limits, size, 80, measure=lambda: 950, adds=lambda: True)
        assert refusal == Refusal("document", "MAX_DOC_BYTES", 1000, 1030)
        assert refusal.reason == "document would reach 1030 bytes, over MAX_DOC_BYTES (1000)"

    def test_nothing_is_measured_again_when_nothing_was_applied_since(self) -> None:
        size = DocSize(990)
        refusal = decide(self.limits, size, 20, measure=self.never, adds=lambda: True)
        assert refusal is not None and refusal.value == 1010

    def test_an_update_that_adds_nothing_is_accepted_even_over_the_limit(self) -> None:
        """Deletions (or items already held) shrink a document loaded over the limit."""
        size = DocSize(5000)
        assert decide(self.limits, size, 50, measure=self.never, adds=lambda: False) is None

    def test_a_known_growth_replaces_the_update_size_for_the_document_limit(self) -> None:
        size = DocSize(990)
        refusal = decide(self.limits, size, 90, measure=self.never, adds=lambda: True, growth=20)
        assert refusal is not None and refusal.value == 1010
        kept = decide(self.limits, size, 90, measure=self.never, adds=lambda: True, growth=0)
        assert kept is None

    def test_the_longest_reasons_fit_a_close_frame(self) -> None:
        big = 2**63 - 1
        cases: tuple[tuple[Limit, str], ...] = (
            ("update", "MAX_UPDATE_BYTES"),
            ("document", "MAX_DOC_BYTES"),
        )
        for limit, setting in cases:
            assert len(Refusal(limit, setting, big, big).reason.encode()) <= MAX_REASON_BYTES


class TestSettings:
    def test_defaults_are_4_and_32_mib(self) -> None:
        settings = Settings.from_env({})
        assert (settings.max_update_bytes, settings.max_doc_bytes) == (4194304, 33554432)

    def test_values_are_read(self) -> None:
        settings = Settings.from_env({"MAX_UPDATE_BYTES": "65536", "MAX_DOC_BYTES": "1048576"})
        assert (settings.max_update_bytes, settings.max_doc_bytes) == (65536, 1048576)

    @pytest.mark.parametrize("name", ["MAX_UPDATE_BYTES", "MAX_DOC_BYTES"])
    @pytest.mark.parametrize(
        ("raw", "problem"), [("4MiB", "must be an integer, got '4MiB'"), ("100", "must be >= 1024")]
    )
    def test_a_bad_value_stops_the_start_naming_the_setting(
        self, name: str, raw: str, problem: str
    ) -> None:
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({name: raw})
        assert refused.value.variable == name
        assert str(refused.value).startswith(f"invalid configuration: {name} {problem}")


class TestUpdateLimitOnYjs:
    async def test_an_oversize_update_closes_with_4413_and_the_others_go_on(
        self, limited: RunningWorker
    ) -> None:
        async with (
            YjsClient.connect(limited.url, "s-big/a.txt") as big,
            YjsClient.connect(limited.url, "s-big/a.txt") as other,
        ):
            await synced(big, other)
            await other.insert(0, "before. ")
            await big.wait_text("before. ")
            with structlog.testing.capture_logs() as logs:
                await big.insert(0, "x" * 5000)
                await wait_until(lambda: big.close_code is not None, 5, "the refusal")
            assert big.close_code == TOO_LARGE == 4413
            assert big.close_reason.startswith("update of 50")
            assert big.close_reason.endswith(f"bytes exceeds MAX_UPDATE_BYTES ({UPDATE_LIMIT})")
            [line] = [entry for entry in logs if entry["event"] == "update_refused"]
            assert line["session"] == "s-big" and line["limit"] == "update"
            assert line["value"] > UPDATE_LIMIT and line["user"] == "anonymous"
            assert line["size"] > 0
            # The other client edits on and syncs; the refused text reached nobody.
            await other.insert(len(str(other.text)), "after.")
            async with YjsClient.connect(limited.url, "s-big/a.txt") as late:
                await synced(late)
                await late.wait_text("before. after.")
                await late.insert(0, "late. ")
                await other.wait_text("late. before. after.")
            assert other.close_code is None
        assert refusals(limited, "update") == 1
        assert refusals(limited, "document") == 0

    async def test_what_was_acknowledged_before_a_refusal_is_there_after_a_restart(
        self, storage: StorageSettings
    ) -> None:
        settings = settings_for(storage, max_update_bytes=UPDATE_LIMIT)
        async with run_worker(settings) as worker:
            async with JsonClient.connect(worker.url) as j:
                await j.join("s-kept", "jay")
                assert (await j.file_op(type="create", path="a.txt", content="acked"))[
                    "type"
                ] == "fileOperationSuccess"
                async with YjsClient.connect(worker.url, "s-kept/a.txt") as big:
                    await synced(big)
                    await big.wait_text("acked")
                    await big.insert(5, "y" * 4000)
                    await wait_until(lambda: big.close_code is not None, 5, "the refusal")
                    assert big.close_code == 4413
                assert await j.get_file("a.txt") == "acked"
        async with run_worker(settings_for(storage)) as again:
            async with YjsClient.connect(again.url, "s-kept/a.txt") as reader:
                await synced(reader)
                assert str(reader.text) == "acked"


class TestDocumentLimit:
    async def test_growth_past_max_doc_bytes_is_refused_and_deletions_are_accepted(
        self, storage: StorageSettings
    ) -> None:
        settings = settings_for(storage, max_doc_bytes=3000)
        async with run_worker(settings) as worker:
            async with (
                YjsClient.connect(worker.url, "s-doc/a.txt") as writer,
                YjsClient.connect(worker.url, "s-doc/a.txt") as other,
            ):
                await synced(writer, other)
                for _ in range(4):
                    await writer.insert(0, "a" * 600)
                await other.wait_text("a" * 2400)
                await writer.insert(0, "b" * 600)
                await wait_until(lambda: writer.close_code is not None, 5, "the refusal")
                assert writer.close_code == 4413
                reached = int(writer.close_reason.split()[3])
                assert reached > 3000
                assert writer.close_reason == (
                    f"document would reach {reached} bytes, over MAX_DOC_BYTES (3000)"
                )
                session = worker.manager.sessions["s-doc"]
                assert str(session.text("a.txt")) == "a" * 2400
                # Deleting shrinks it; then there is room again.
                await other.edit(lambda t: t.__delitem__(slice(0, 2000)))
                await other.insert(0, "fits")
                await wait_until(lambda: str(session.text("a.txt")) == "fits" + "a" * 400)
                assert other.close_code is None
            assert refusals(worker, "document") == 1

    async def test_a_session_stored_over_the_limit_loads_and_only_shrinks(
        self, storage: StorageSettings
    ) -> None:
        async with run_worker(settings_for(storage)) as worker:
            async with JsonClient.connect(worker.url) as j:
                await j.join("s-over", "jay")
                reply = await j.file_op(type="create", path="a.txt", content="z" * 5000)
                assert reply["type"] == "fileOperationSuccess"
        async with run_worker(settings_for(storage, max_doc_bytes=2048)) as worker:
            async with YjsClient.connect(worker.url, "s-over/a.txt") as editor:
                await synced(editor)
                assert str(editor.text) == "z" * 5000
                await editor.edit(lambda t: t.__delitem__(slice(0, 1000)))
                session = worker.manager.sessions["s-over"]
                await wait_until(lambda: len(str(session.text("a.txt"))) == 4000)
                await editor.insert(0, "more")
                await wait_until(lambda: editor.close_code is not None, 5, "the refusal")
                assert editor.close_code == 4413 and "MAX_DOC_BYTES (2048)" in editor.close_reason
            assert str(session.text("a.txt")) == "z" * 4000


class TestJsonProtocol:
    async def test_refused_writes_get_the_error_and_the_connection_stays(
        self, limited: RunningWorker
    ) -> None:
        async with (
            JsonClient.connect(limited.url) as j,
            JsonClient.connect(limited.url) as watcher,
        ):
            await j.join("s-json", "jay")
            await watcher.join("s-json", "wes")
            doc: Doc = Doc()
            doc.get("content", type=Text).insert(0, "q" * 3000)
            update = doc.get_update()
            await j.send({"type": "yjsUpdate", "data": {"docId": "a.txt", "update": list(update)}})
            error = await j.recv("error")
            assert error == {
                "type": "error",
                "error": "Failed to apply update",
                "reason": f"update of {len(update)} bytes exceeds MAX_UPDATE_BYTES (2048)",
            }
            reply = await j.file_op(type="create", path="b.txt", content="r" * 3000)
            assert reply == {
                "type": "error",
                "error": "Failed to apply file operation",
                "reason": f"update of 3000 bytes exceeds MAX_UPDATE_BYTES ({UPDATE_LIMIT})",
            }
            # Still connected, still in the session; nothing of the refused writes went out.
            assert await j.request({"type": "ping"}, "pong") == {"type": "pong"}
            ok = await j.file_op(type="create", path="c.txt", content="small")
            assert ok["type"] == "fileOperationSuccess"
            assert await j.get_files() == ["c.txt"]
            seen = await watcher.recv("fileOperation")
            assert seen["data"]["path"] == "c.txt"
            assert not [m for m in watcher.inbox if m.get("type") == "yjsUpdate"]
        assert refusals(limited, "update") == 2

    async def test_a_file_operation_past_the_document_limit_names_it(
        self, storage: StorageSettings
    ) -> None:
        async with run_worker(settings_for(storage, max_doc_bytes=4096)) as worker:
            async with JsonClient.connect(worker.url) as j:
                await j.join("s-jdoc", "jay")
                assert (await j.file_op(type="create", path="a.txt", content="a" * 3000))[
                    "type"
                ] == "fileOperationSuccess"
                reply = await j.file_op(type="create", path="b.txt", content="b" * 2000)
                assert reply["error"] == "Failed to apply file operation"
                assert reply["reason"].startswith("document would reach ")
                assert reply["reason"].endswith(" bytes, over MAX_DOC_BYTES (4096)")
                # A shorter text for a file is never refused: it shrinks the documents.
                shorter = await j.file_op(type="update", path="a.txt", content="a" * 10)
                assert shorter["type"] == "fileOperationSuccess"
                assert await j.get_files() == ["a.txt"]


class TestHttpApi:
    async def test_a_write_over_a_limit_is_413_with_the_limit(self, limited: RunningWorker) -> None:
        async with httpx.AsyncClient(base_url=limited.http) as http:
            url = "/api/sessions/s-api/files/a.txt"
            assert (await http.put(url, json={"content": "fits"})).status_code == 200
            refused = await http.put(url, json={"content": "w" * 3000})
            assert refused.status_code == 413
            assert refused.json() == {
                "error": "Failed to apply file operation",
                "reason": "update of 3000 bytes exceeds MAX_UPDATE_BYTES (2048)",
            }
            assert (await http.get(url)).json()["content"] == "fits"

    async def test_a_restore_over_the_document_limit_is_refused_whole(
        self, storage: StorageSettings
    ) -> None:
        """Checked before the first edit: a restore whose files together pass MAX_DOC_BYTES
        changes none of them (it used to restore the files before the one that passed)."""
        settings = settings_for(storage, max_update_bytes=1 << 20, max_doc_bytes=9000)
        async with run_worker(settings) as worker, httpx.AsyncClient(base_url=worker.http) as http:
            base = "/api/sessions/s-restore"
            assert (await http.post("/api/sessions", json={"id": "s-restore"})).status_code < 300
            for name, char in (("a.txt", "a"), ("b.txt", "b")):
                put = await http.put(f"{base}/files/{name}", json={"content": char * 3000})
                assert put.status_code == 200
            commit = (await http.post(f"{base}/commit")).json()
            assert commit["result"] == "committed"
            for name in ("a.txt", "b.txt"):
                assert (await http.put(f"{base}/files/{name}", json={"content": ""})).is_success
            assert (await http.put(f"{base}/files/c.txt", json={"content": "c" * 3500})).is_success
            refused = await http.post(f"{base}/restore", json={"commit": commit["commit"]})
            assert refused.status_code == 413
            assert "MAX_DOC_BYTES (9000)" in refused.json()["reason"]
            for name, text in (("a.txt", ""), ("b.txt", ""), ("c.txt", "c" * 3500)):
                assert (await http.get(f"{base}/files/{name}")).json()["content"] == text
            # One file of it fits.
            one = await http.post(
                f"{base}/restore", json={"commit": commit["commit"], "path": "a.txt"}
            )
            assert one.json()["restored"] == ["a.txt"]
            assert (await http.get(f"{base}/files/a.txt")).json()["content"] == "a" * 3000


class TestMetrics:
    async def test_refusals_and_document_sizes_are_exported(self, limited: RunningWorker) -> None:
        async with YjsClient.connect(limited.url, "s-m/a.txt") as editor:
            await synced(editor)
            await editor.insert(0, "hello")
            await wait_until(lambda: "s-m" in limited.manager.sessions)
            await editor.insert(0, "x" * 3000)
            await wait_until(lambda: editor.close_code is not None, 5, "the refusal")
        async with YjsClient.connect(limited.url, "s-n/a.txt") as editor:
            await synced(editor)
            await editor.insert(0, "a longer text, in a second session")
            await wait_until(lambda: "s-n" in limited.manager.sessions)
            await asyncio.sleep(0.1)
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"{limited.http}/metrics")).text
        samples = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("collab_")
        )
        assert float(samples['collab_limit_refusals_total{limit="update"}']) == 1
        assert float(samples['collab_limit_refusals_total{limit="document"}']) == 0
        total = float(samples["collab_session_doc_bytes"])
        largest = float(samples["collab_session_doc_bytes_max"])
        sizes = [s.size.estimate for s in limited.manager.sessions.values()]
        assert (total, largest) == (sum(sizes), max(sizes))
        assert len(sizes) == 2 and total > largest > 0
