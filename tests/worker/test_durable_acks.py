"""Acknowledged means stored: ``fileOperationSuccess`` only after the edit is in storage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import S3Server, start_s3_server
from tests.support import JsonClient, WorkerProcess, run_worker, settings_for
from worker.settings import StorageSettings

ROUNDS = 20


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A SeaweedFS of this test's own, so stopping it affects nobody else."""
    with start_s3_server() as server:
        yield server


class TestAcknowledgedMeansStored:
    @pytest.mark.slow
    async def test_every_acknowledged_file_survives_an_immediate_sigkill(
        self, backend_env: dict[str, str], tmp_path: Path
    ) -> None:
        """20 rounds of: create a file, wait for its success, SIGKILL the worker at once,
        start it again. Every acknowledged file is there at the end (it was 0 of 20 when
        success meant "applied")."""
        env = {
            "WORKER_ID": "w-ack",
            "COLLAB_HOST": "127.0.0.1",
            # A long interval: without durable acknowledgements nothing would be stored yet.
            "FLUSH_INTERVAL_MS": "5000",
            **backend_env,
        }
        worker = WorkerProcess(env, log=tmp_path / "worker.log")
        try:
            for i in range(ROUNDS):
                await worker.start()
                async with JsonClient.connect(worker.url) as client:
                    await client.join("s-acks", "alice")
                    create = {"type": "create", "path": f"f{i}.txt", "content": f"round {i}"}
                    await client.send({"type": "fileOperation", "data": create})
                    await client.recv("fileOperationSuccess", timeout=10)
                    worker.kill()
            await worker.start()
            async with JsonClient.connect(worker.url) as client:
                await client.join("s-acks", "check")
                for i in range(ROUNDS):
                    assert await client.get_file(f"f{i}.txt") == f"round {i}", i
        finally:
            await worker.stop()

    async def test_replies_keep_the_order_of_the_requests(self, tmp_path: Path) -> None:
        """An error or a pong asked after a file operation never overtakes its success."""
        settings = settings_for(
            StorageSettings(storage_dir=tmp_path / "storage"), flush_interval_ms=2000
        )
        async with run_worker(settings) as worker, JsonClient.connect(worker.url) as client:
            await client.join("s-order", "alice")
            create = {"type": "create", "path": "a.txt", "content": "x"}
            await client.ws.send(json.dumps({"type": "fileOperation", "data": create}))
            await client.ws.send(json.dumps({"type": "getFile", "data": {"path": "../bad"}}))
            await client.ws.send(json.dumps({"type": "ping"}))
            kinds = [json.loads(await client.ws.recv())["type"] for _ in range(3)]
            assert kinds == ["fileOperationSuccess", "error", "pong"]

    async def test_acknowledgement_latency_is_measured(self, tmp_path: Path) -> None:
        settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
        async with run_worker(settings) as worker, JsonClient.connect(worker.url) as client:
            await client.join("s-latency", "alice")
            for i in range(3):
                await client.file_op(type="create", path=f"{i}.txt", content="x")
            count = worker.app.state.metrics.value("collab_ack_seconds_count")
            assert count == 3

    @pytest.mark.s3
    async def test_applied_mode_answers_without_waiting_for_storage(self, own_s3: S3Server) -> None:
        """ACK_MODE=applied is the opt-out: success at once, even while storage is down."""
        storage = StorageSettings(
            minio_endpoint=own_s3.host,
            minio_port=own_s3.port,
            minio_bucket=f"applied-{uuid.uuid4().hex[:12]}",
            minio_access_key=own_s3.access_key,
            minio_secret_key=own_s3.secret_key,
        )
        settings = settings_for(storage, ack_mode="applied")
        async with run_worker(settings) as worker, JsonClient.connect(worker.url) as client:
            await client.join("s-applied", "alice")
            await own_s3.astop()
            reply = await asyncio.wait_for(
                client.file_op(type="create", path="a.txt", content="x"), 2
            )
            assert reply["type"] == "fileOperationSuccess"
            await own_s3.astart()
