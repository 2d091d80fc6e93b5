"""A store that ignores conditional writes is refused at start (worker.storage.conditional_writes).

The stand-in for such a store is real: SeaweedFS behind an HTTP proxy (in this event loop) that
removes ``If-None-Match`` / ``If-Match`` from each request and signs it again, as a server that
checked the signature and then ignored the headers would have accepted it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import s3_env
from tests.s3server import S3Server, sigv4_headers, start_s3_server
from tests.storage.conftest import fresh_bucket
from tests.support import (
    JsonClient,
    WorkerProcess,
    eventually,
    run_worker,
    settings_for,
    wait_until,
)
from worker.settings import StorageSettings
from worker.storage import LocalStore, MinioStore, StorageUnavailable, Store
from worker.storage.conditional_writes import (
    PROBE_PREFIX,
    ConditionalWriteProof,
    ConditionalWritesIgnored,
    prove_conditional_writes,
)

CONDITIONS = (b"if-none-match", b"if-match")


class ConditionIgnoringS3:
    """A proxy to ``upstream`` that drops the ``strip`` headers from every request (and signs a
    request it changed again); it counts the requests it changed."""

    def __init__(self, upstream: S3Server, strip: tuple[bytes, ...] = CONDITIONS) -> None:
        self.upstream = upstream
        self.strip = strip
        self.stripped = 0
        self.port = 0

    def store_kwargs(self, bucket: str) -> dict[str, Any]:
        return {**self.upstream.store_kwargs(bucket), "port": self.port}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ConditionIgnoringS3]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def _relay(self, client: asyncio.StreamReader, answer: asyncio.StreamWriter) -> None:
        reader, upstream = await asyncio.open_connection(self.upstream.host, self.upstream.port)

        async def answers() -> None:  # responses go back as they are, in order
            while chunk := await reader.read(65536):
                answer.write(chunk)
                await answer.drain()
            answer.close()

        back = asyncio.create_task(answers())
        try:
            while True:
                head = await client.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                headers = [tuple(line.split(b":", 1)) for line in lines[1:]]
                length = next((int(v) for k, v in headers if k.lower() == b"content-length"), 0)
                body = await client.readexactly(length)
                upstream.write(self._rewrite(lines[0], headers) + body)
                await upstream.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            upstream.close()
            back.cancel()
            answer.close()

    def _rewrite(self, request_line: bytes, headers: list[tuple[bytes, ...]]) -> bytes:
        kept = [(k, v.strip()) for k, v in headers if k.lower() not in self.strip]
        if len(kept) != len(headers):
            self.stripped += 1
            method, path, _ = request_line.decode().split(" ")
            assert "?" not in path  # a conditional PUT of an object has no query string
            payload = next(v for k, v in kept if k.lower() == b"x-amz-content-sha256").decode()
            host = next(v for k, v in kept if k.lower() == b"host").decode()
            signature = sigv4_headers(
                method,
                path,
                host,
                payload,
                self.upstream.access_key,
                self.upstream.secret_key,
            )
            resigned = {k.lower() for k in signature}
            kept = [(k, v) for k, v in kept if k.decode().lower() not in resigned]
            kept += [(k.encode(), v.encode()) for k, v in signature.items()]
        return b"\r\n".join([request_line, *(k + b": " + v for k, v in kept)]) + b"\r\n\r\n"


@pytest.fixture
def own_s3() -> Iterator[S3Server]:
    """A SeaweedFS of this test's own, so stopping it affects nobody else."""
    with start_s3_server() as server:
        yield server


async def no_probe_left(store: Store) -> bool:
    return await store.list(PROBE_PREFIX) == []


class TestTheProof:
    async def test_passes_on_every_store_and_leaves_nothing(self, store: Store) -> None:
        """The embedded store, SeaweedFS and (with MINIO_TEST_ENDPOINT) MinIO honour both
        conditions; the probe key is gone afterwards."""
        await prove_conditional_writes(store, f"{PROBE_PREFIX}w-1-test", "the store under test")
        assert await no_probe_left(store)

    @pytest.mark.s3
    @pytest.mark.parametrize(
        ("strip", "named"),
        [(CONDITIONS, "If-None-Match: *"), ((b"if-match",), "If-Match was ignored")],
        ids=["both-ignored", "if-match-ignored"],
    )
    async def test_a_store_that_ignores_them_is_refused_by_name(
        self, s3_server: S3Server, strip: tuple[bytes, ...], named: str
    ) -> None:
        """Each ignored condition is caught, named in the error with the store; the probe key
        is deleted all the same."""
        async with ConditionIgnoringS3(s3_server, strip).running() as ignoring:
            store = MinioStore(**ignoring.store_kwargs(fresh_bucket()))
            try:
                with pytest.raises(ConditionalWritesIgnored) as refused:
                    await prove_conditional_writes(store, f"{PROBE_PREFIX}w-1-x", "s3 there")
                assert refused.value.store == "s3 there"
                assert named in refused.value.reason
                assert ignoring.stripped >= 1
                assert await no_probe_left(store)
            finally:
                await store.aclose()


class TestTheGuard:
    async def test_compare_and_swap_waits_for_the_proof(self, tmp_path: Path) -> None:
        """Before the proof passed, the coordination store refuses put_if as unavailable (so
        no lease and no owner record is written); after, it is the store itself."""
        store = LocalStore(tmp_path / "store")
        proof = ConditionalWriteProof(store, "w-1", "local test")
        with pytest.raises(StorageUnavailable, match="not proven"):
            await proof.guarded.put_if("ownership/workers/w-1.json", b"{}", None)
        async with anyio.create_task_group() as tg:
            await tg.start(proof.run)
        assert proof.proven and proof.refused is None
        assert await proof.guarded.put_if("ownership/workers/w-1.json", b"{}", None)
        assert await no_probe_left(store)

    @pytest.mark.s3
    async def test_a_refused_store_keeps_an_embedded_worker_refusing(
        self, s3_server: S3Server
    ) -> None:
        """Without a SIGTERM handler (a worker in a test's event loop), a refusal stops
        nothing: the process lives on and every compare-and-swap is refused, naming why."""
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        async with ConditionIgnoringS3(s3_server).running() as ignoring:
            store = MinioStore(**ignoring.store_kwargs(fresh_bucket()))
            try:
                proof = ConditionalWriteProof(store, "w-1", "s3 there")
                async with anyio.create_task_group() as tg:
                    await tg.start(proof.run)
                assert proof.refused is not None and not proof.proven
                with pytest.raises(StorageUnavailable, match="does not honour"):
                    await proof.guarded.put_if("ownership/workers/w-1.json", b"{}", None)
            finally:
                await store.aclose()

    @pytest.mark.s3
    async def test_storage_down_at_start_defers_the_proof(self, own_s3: S3Server) -> None:
        """An outage is not a failed proof: start-up goes on, compare-and-swaps are refused
        meanwhile with the storage error, and the proof passes once storage answers."""
        store = MinioStore(**own_s3.store_kwargs(fresh_bucket()))
        refusals: list[ConditionalWritesIgnored] = []
        try:
            await own_s3.astop()
            proof = ConditionalWriteProof(store, "w-1", "s3 test", refusals.append)
            async with anyio.create_task_group() as tg:
                with anyio.fail_after(10):
                    await tg.start(proof.run)
                assert not proof.proven and proof.last_error is not None
                with pytest.raises(StorageUnavailable, match="not proven"):
                    await proof.guarded.put_if("ownership/workers/w-1.json", b"{}", None)
                await own_s3.astart()
                await wait_until(lambda: proof.proven, timeout=30, what="the proof")
            assert refusals == [] and proof.refused is None
        finally:
            await store.aclose()


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


class TestTheWorker:
    @pytest.mark.s3
    async def test_a_store_that_ignores_them_stops_the_worker_with_one_error(
        self, s3_server: S3Server, tmp_path: Path
    ) -> None:
        """``python -m worker`` on such a store exits non-zero, and its log says why in one
        error line: the store (endpoint and bucket), what was ignored, the fix."""
        bucket = fresh_bucket()
        async with ConditionIgnoringS3(s3_server).running() as ignoring:
            worker = WorkerProcess(
                {
                    **s3_env(ignoring.store_kwargs(bucket)),
                    "WORKER_ID": "w-refused",
                    "COLLAB_HOST": "127.0.0.1",
                },
                log=tmp_path / "worker.log",
            )
            with pytest.raises(RuntimeError, match="exited with 3"):
                await worker.start()
        assert worker.proc is not None and worker.proc.returncode == 3
        errors = [e for e in json_lines(tmp_path / "worker.log") if e.get("level") == "error"]
        assert [e["event"] for e in errors] == ["storage_refused"], errors
        [refused] = errors
        assert f"127.0.0.1:{ignoring.port}/{bucket}" in str(refused["store"])
        assert "If-None-Match" in str(refused["reason"])
        assert "If-None-Match: * and If-Match" in str(refused["fix"])

    async def test_a_worker_proves_its_store_and_serves(
        self, backend_env: dict[str, str], tmp_path: Path
    ) -> None:
        """On the embedded store, SeaweedFS (and MinIO when configured) the proof passes at
        start: the worker is ready, logs it once, and serves."""
        worker = WorkerProcess(
            {**backend_env, "WORKER_ID": "w-proven", "COLLAB_HOST": "127.0.0.1"},
            log=tmp_path / "worker.log",
        )
        await worker.start()
        try:
            async with JsonClient.connect(worker.url) as j:
                assert (await j.join("proven", "alice"))["type"] == "joined"
        finally:
            assert await worker.stop() == 0
        events = [e["event"] for e in json_lines(tmp_path / "worker.log")]
        assert events.count("conditional_writes_proven") == 1
        assert events.index("conditional_writes_proven") < events.index("lease_acquired")

    @pytest.mark.s3
    async def test_storage_down_at_start_is_not_a_failed_proof(self, own_s3: S3Server) -> None:
        """The worker starts while storage is down, reports "starting" and takes no session;
        once storage answers, the proof passes, the lease follows and sessions are served."""
        storage = StorageSettings(
            minio_endpoint=own_s3.host,
            minio_port=own_s3.port,
            minio_bucket=f"proof-{uuid.uuid4().hex[:12]}",
            minio_access_key=own_s3.access_key,
            minio_secret_key=own_s3.secret_key,
        )
        await own_s3.astop()
        async with run_worker(settings_for(storage)) as worker, httpx.AsyncClient() as http:
            ready = await http.get(f"{worker.http}/readyz")
            assert ready.status_code == 503 and ready.json()["state"] == "starting"
            assert "not proven" in str(ready.json()["storageError"])
            async with JsonClient.connect(worker.url) as j:
                await j.send({"type": "join", "sessionId": "early", "userId": "alice"})
                assert (await j.recv("error"))["error"] == "Session unavailable"
            assert worker.manager.sessions == {}
            await own_s3.astart()

            async def ready() -> bool:
                return (await http.get(f"{worker.http}/readyz")).status_code == 200

            await eventually(ready, 30, "ready once storage answers")
            assert worker.app.state.conditional_writes.proven
            async with JsonClient.connect(worker.url) as j:
                assert (await j.join("early", "alice"))["type"] == "joined"
