"""Storage outages: refuse to load rather than serve empty; keep serving and catch up after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.s3server import S3Server, start_s3_server
from tests.support import (
    JsonClient,
    YjsClient,
    eventually,
    run_worker,
    settings_for,
    wait_until,
)
from worker.settings import StorageSettings

pytestmark = pytest.mark.s3


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A SeaweedFS of this test's own, so stopping it affects nobody else."""
    with start_s3_server() as server:
        yield server


def s3_settings(server: S3Server) -> StorageSettings:
    return StorageSettings(
        minio_endpoint=server.host,
        minio_port=server.port,
        minio_bucket=f"outage-{uuid.uuid4().hex[:12]}",
        minio_access_key=server.access_key,
        minio_secret_key=server.secret_key,
    )


class TestStorageDownAtLoad:
    async def test_the_session_is_refused_with_1013_and_never_served_empty(
        self, own_s3: S3Server
    ) -> None:
        settings = settings_for(s3_settings(own_s3))
        async with run_worker(settings) as worker:
            await own_s3.astop()
            async with JsonClient.connect(worker.url) as j:
                await j.send({"type": "join", "sessionId": "s-down", "userId": "alice"})
                reply = await j.recv("error")
                assert reply["error"] == "Session unavailable"
                assert "storage unavailable" in reply["reason"]
                with pytest.raises(Exception) as closed:
                    await j.recv(timeout=5)
                assert (
                    getattr(closed.value, "rcvd", None) is not None
                    and closed.value.rcvd.code == 1013
                )
            async with YjsClient.connect(worker.url, "s-down/a.txt") as y:
                await wait_until(lambda: y.close_code is not None, timeout=10, what="close")
                assert y.close_code == 1013 and "storage unavailable" in y.close_reason
                assert not y.synced.is_set()  # never handed an empty document
            assert "s-down" not in worker.manager.sessions
            await own_s3.astart()
            async with JsonClient.connect(worker.url) as j:
                assert (await j.join("s-down", "alice"))["type"] == "joined"


class TestStorageDownWhileServing:
    async def test_editing_goes_on_lag_is_reported_and_everything_is_written_after(
        self, own_s3: S3Server
    ) -> None:
        storage = s3_settings(own_s3)
        settings = settings_for(storage, flush_interval_ms=100)
        async with run_worker(settings) as worker, httpx.AsyncClient() as http:
            async with (
                JsonClient.connect(worker.url) as j,
                YjsClient.connect(worker.url, "s-out/a.txt") as y1,
                YjsClient.connect(worker.url, "s-out/a.txt") as y2,
            ):
                await j.join("s-out", "alice")
                await asyncio.gather(y1.synced.wait(), y2.synced.wait())
                await own_s3.astop()
                # Storage is gone; edits keep flowing between clients. The file operation is
                # applied (the editors see it) but acknowledged only once it is stored.
                await j.send(
                    {
                        "type": "fileOperation",
                        "data": {
                            "type": "create",
                            "path": "b.txt",
                            "content": "written during the outage",
                        },
                    }
                )
                for word in ("alpha ", "beta ", "gamma "):
                    await y1.insert(len(str(y1.text)), word)
                await y2.wait_text("alpha beta gamma ")
                await wait_until(
                    lambda: worker.app.state.metrics.flush_errors._value.get() >= 1,
                    timeout=10,
                    what="a failed flush",
                )

                async def lagging_a_second() -> dict[str, Any] | None:
                    ready: dict[str, Any] = (await http.get(f"{worker.http}/readyz")).json()
                    return ready if ready["unflushedAgeSeconds"] >= 1.0 else None

                ready = await eventually(lagging_a_second, 10, "a lag of one second")
                assert ready["storage"] == "unavailable" and ready["unflushedBytes"] > 0
                metrics = (await http.get(f"{worker.http}/metrics")).text
                age = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("collab_unflushed_age_seconds ")
                ]
                assert float(age[0].split()[1]) >= 1.0
                with pytest.raises(TimeoutError):
                    await j.recv("fileOperationSuccess", timeout=0.3)  # not stored: no answer
                # Storage comes back (with what it stored before), well within the lease
                # (LEASE_TTL_MS), so this worker kept serving all along.
                await own_s3.astart()
                await j.recv("fileOperationSuccess", timeout=20)
                await wait_until(
                    lambda: not worker.manager.sessions["s-out"].outbox.dirty,
                    timeout=40,
                    what="backlog written",
                )
                ready = (await http.get(f"{worker.http}/readyz")).json()
                assert ready["storage"] == "ok" and ready["unflushedBytes"] == 0
        # A fresh worker on the same storage sees every edit made during the outage.
        async with (
            run_worker(settings_for(storage, worker_id="w-fresh")) as fresh,
            JsonClient.connect(fresh.url) as j,
        ):
            await j.join("s-out", "bob")
            assert await j.get_file("a.txt") == "alpha beta gamma "
            assert await j.get_file("b.txt") == "written during the outage"
