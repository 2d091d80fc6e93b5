"""The Store contract, run against every backend, plus what only one backend can show."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from tests.s3server import S3Server, start_s3_server
from tests.storage.conftest import fresh_bucket
from worker.storage import (
    InstrumentedStore,
    LocalStore,
    MinioStore,
    StorageError,
    StorageUnavailable,
    Store,
    open_store,
)

HOSTILE_KEYS = [
    "",
    "../escape",
    "a/../../escape",
    "/etc/passwd",
    "a\\b",
    "a\0b",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "..",
    "x" * 1025,
]


def _http_reply(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_S3_BUSY = b"<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>"
_S3_DENIED = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"


class TestStoreContract:
    async def test_missing_key_is_none(self, store: Store) -> None:
        """A key that was never written reads as None, not as an error."""
        assert await store.get("sessions/none/meta.json") is None

    async def test_put_then_get_returns_the_same_bytes(self, store: Store) -> None:
        """Bytes come back exactly, including every byte value and the empty object."""
        every_byte = bytes(range(256)) * 4
        await store.put("a/bytes", every_byte)
        await store.put("a/empty", b"")
        assert await store.get("a/bytes") == every_byte
        assert await store.get("a/empty") == b""

    async def test_put_overwrites(self, store: Store) -> None:
        """A second put of the same key replaces the first entirely."""
        await store.put("k", b"first, and longer")
        await store.put("k", b"second")
        assert await store.get("k") == b"second"

    async def test_delete_removes_and_missing_delete_is_a_no_op(self, store: Store) -> None:
        """Deleting makes the key read as None; deleting it again is not an error."""
        await store.put("gone/soon", b"x")
        await store.delete("gone/soon")
        assert await store.get("gone/soon") is None
        await store.delete("gone/soon")
        await store.delete("never/was")
        assert await store.list("gone/") == []

    async def test_list_is_sorted_and_complete_under_a_prefix(self, store: Store) -> None:
        """list returns every key under the prefix, sorted, at any depth."""
        keys = ["p/b", "p/a/2", "p/a/10", "p/c/d/e", "p/a/1"]
        for key in keys:
            await store.put(key, b"v")
        assert await store.list("p/") == sorted(keys)
        assert await store.list("p/a/") == ["p/a/1", "p/a/10", "p/a/2"]

    async def test_list_sizes_gives_every_key_with_its_size(self, store: Store) -> None:
        """list_sizes is list with each object's size in bytes (stored-bytes metrics)."""
        await store.put("p/a", b"12345")
        await store.put("p/b/c", b"")
        await store.put("q/a", b"xyz")
        assert await store.list_sizes("p/") == {"p/a": 5, "p/b/c": 0}
        assert await store.list_sizes("none/") == {}

    async def test_list_prefix_isolation(self, store: Store) -> None:
        """ "sessions/a/" never lists "sessions/ab/"; a partial prefix matches like S3's."""
        for key in ["sessions/a/x", "sessions/ab/x", "sessions/b/x", "other/a/x"]:
            await store.put(key, b"v")
        assert await store.list("sessions/a/") == ["sessions/a/x"]
        assert await store.list("sessions/a") == ["sessions/a/x", "sessions/ab/x"]
        assert await store.list("sessions/") == ["sessions/a/x", "sessions/ab/x", "sessions/b/x"]
        assert await store.list("nothing/") == []
        assert await store.list("") == [
            "other/a/x",
            "sessions/a/x",
            "sessions/ab/x",
            "sessions/b/x",
        ]

    async def test_unusual_but_valid_keys_round_trip(self, store: Store) -> None:
        """Spaces, '+', '%' and non-ASCII survive URL encoding and listing unchanged."""
        key = "odd/sp ace/é+x%20~!"
        await store.put(key, b"u")
        assert await store.get(key) == b"u"
        assert await store.list("odd/") == [key]

    async def test_hostile_keys_are_refused(self, store: Store) -> None:
        """Traversal, absolute, NUL, backslash, empty components: ValueError, nothing touched."""
        for key in HOSTILE_KEYS:
            with pytest.raises(ValueError):
                await store.put(key, b"x")
            with pytest.raises(ValueError):
                await store.get(key)
            with pytest.raises(ValueError):
                await store.delete(key)
        for prefix in ["../", "/abs", "a\\", "a\0", "a/../"]:
            with pytest.raises(ValueError):
                await store.list(prefix)
        assert await store.list("") == []

    async def test_put_is_atomic_for_concurrent_readers(self, store: Store) -> None:
        """A reader racing overwrites sees one whole version, never a torn mix or a prefix."""
        size = 512 * 1024
        versions = [bytes([i]) * size for i in range(1, 6)]
        await store.put("atomic/obj", versions[0])
        seen: set[bytes] = set()
        done = anyio.Event()

        async def reader() -> None:
            while not done.is_set():
                data = await store.get("atomic/obj")
                assert data in versions, "a reader saw a partial or mixed object: " + (
                    "None" if data is None else f"{len(data)} bytes, {set(data[:4096])}"
                )
                seen.add(data[:1])

        async def writer() -> None:
            for version in versions * 2:
                await store.put("atomic/obj", version)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(reader)
            tg.start_soon(writer)
        assert seen
        assert await store.list("atomic/") == ["atomic/obj"]  # no temp files leak into listings

    async def test_large_object_round_trips(self, store: Store) -> None:
        """Objects above S3's 5 MiB part size (multipart upload) read back whole."""
        big = os.urandom(1024) * (6 * 1024 + 7)
        await store.put("big/object", big)
        assert await store.get("big/object") == big

    async def test_list_returns_more_than_one_page(self, store: Store) -> None:
        """Listings are complete past S3's 1000-keys-per-page limit."""
        keys = [f"many/{i:05d}" for i in range(1003)]
        limiter = anyio.CapacityLimiter(16)

        async def put(key: str) -> None:
            async with limiter:
                await store.put(key, b"")

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(put, key)
        assert await store.list("many/") == keys

    async def test_put_if_swaps_only_from_the_version_it_read(self, store: Store) -> None:
        key = "cas/ref"
        assert await store.get_versioned(key) is None
        assert await store.put_if(key, b"one", None)
        assert not await store.put_if(key, b"again", None)  # exists now
        current = await store.get_versioned(key)
        assert current is not None and current[0] == b"one"
        assert await store.put_if(key, b"two", current[1])
        assert not await store.put_if(key, b"stale", current[1])  # moved since
        assert await store.get(key) == b"two"
        assert await store.list("cas/") == ["cas/ref"]  # nothing else shows

    async def test_put_if_returns_the_version_a_later_read_reports(self, store: Store) -> None:
        """The returned version is the next swap's precondition: no read in between needed."""
        key = "cas/chain"
        version = await store.put_if(key, b"one", None)
        assert version is not None
        found = await store.get_versioned(key)
        assert found == (b"one", version)
        for i in range(3):
            version = await store.put_if(key, f"next-{i}".encode(), version)
            assert version is not None
        assert await store.get_versioned(key) == (b"next-2", version)

    async def test_concurrent_swaps_from_one_version_have_one_winner(self, store: Store) -> None:
        key = "cas/race"
        await store.put_if(key, b"base", None)
        base = await store.get_versioned(key)
        assert base is not None
        results = await asyncio.gather(
            *(store.put_if(key, f"writer-{i}".encode(), base[1]) for i in range(8))
        )
        won = [i for i, version in enumerate(results) if version is not None]
        assert len(won) == 1
        winner = won[0]
        assert await store.get(key) == f"writer-{winner}".encode()

    async def test_check_passes_on_a_healthy_store(self, store: Store) -> None:
        """Readiness probe succeeds when the backend is reachable."""
        await store.check()


class TestInstrumentedStore:
    async def test_every_operation_is_reported_with_its_outcome(self, tmp_path: Path) -> None:
        """Each op reports (op, "ok") or (op, "error") exactly once; the data path is untouched."""
        calls: list[tuple[str, str]] = []
        store = InstrumentedStore(
            LocalStore(tmp_path), lambda op, outcome: calls.append((op, outcome))
        )
        await store.put("a/b", b"1")
        assert await store.get("a/b") == b"1"
        assert await store.list("a/") == ["a/b"]
        await store.delete("a/b")
        await store.check()
        with pytest.raises(ValueError):
            await store.get("../x")
        await store.aclose()
        assert calls == [
            ("put", "ok"),
            ("get", "ok"),
            ("list", "ok"),
            ("delete", "ok"),
            ("check", "ok"),
            ("get", "error"),
        ]

    async def test_open_store_wraps_when_a_callback_is_given(self, tmp_path: Path) -> None:
        """The factory picks the local store without an endpoint and adds counting on request."""
        calls: list[tuple[str, str]] = []
        plain = open_store(storage_dir=tmp_path)
        counted = open_store(
            storage_dir=tmp_path, on_request=lambda op, outcome: calls.append((op, outcome))
        )
        assert isinstance(plain, LocalStore)
        assert isinstance(counted, InstrumentedStore)
        await counted.put("x", b"1")
        assert await plain.get("x") == b"1"
        assert calls == [("put", "ok")]
        s3 = open_store(endpoint="127.0.0.1", port=9, bucket="b", access_key="a", secret_key="s")
        assert isinstance(s3, MinioStore)
        await s3.aclose()


class TestLocalStore:
    async def test_hostile_keys_never_touch_the_file_system(self, tmp_path: Path) -> None:
        """Defence in depth: refused keys create nothing, inside or outside the root."""
        root = tmp_path / "root"
        store = LocalStore(root)
        for key in HOSTILE_KEYS:
            with pytest.raises(ValueError):
                await store.put(key, b"x")
        assert [p async for p in anyio.Path(tmp_path).iterdir()] == []

    async def test_temp_names_are_reserved_and_never_listed(self, tmp_path: Path) -> None:
        """A crashed writer's temp file is invisible, and no key can collide with one."""
        store = LocalStore(tmp_path)
        await store.put("s/real", b"1")
        await anyio.Path(tmp_path / "s" / ".tmp-real.deadbeef").write_bytes(b"half")
        assert await store.list("s/") == ["s/real"]
        with pytest.raises(ValueError):
            await store.put("s/.tmp-x", b"1")

    async def test_writes_are_files_under_the_root(self, tmp_path: Path) -> None:
        """The layout stays inspectable: key a/b/c is the file root/a/b/c."""
        store = LocalStore(tmp_path, fsync=False)
        await store.put("a/b/c", b"data")
        assert await anyio.Path(tmp_path / "a" / "b" / "c").read_bytes() == b"data"

    @pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
    async def test_check_fails_on_an_unwritable_root(self, tmp_path: Path) -> None:
        """Readiness reports a root it cannot write as unavailable."""
        await anyio.Path(tmp_path).chmod(0o500)
        try:
            with pytest.raises(StorageUnavailable):
                await LocalStore(tmp_path).check()
        finally:
            await anyio.Path(tmp_path).chmod(0o700)

    async def test_check_fails_when_the_root_is_a_file(self, tmp_path: Path) -> None:
        """A root that cannot be a directory makes check raise StorageUnavailable."""
        await anyio.Path(tmp_path / "file").write_bytes(b"")
        with pytest.raises(StorageUnavailable):
            await LocalStore(tmp_path / "file").check()
        with pytest.raises(StorageUnavailable):
            await LocalStore(tmp_path / "file").put("x", b"1")


@pytest.mark.s3
class TestMinioStoreRequests:
    async def test_small_requests_are_signed_without_a_thread_hop(
        self, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A GET, a LIST and a small PUT hash their body on the loop (a join storm is made of
        them, and a hop per request was 8 % of the worker's CPU); a large PUT still hashes in a
        thread. The real client against the real server: only ``asyncio.to_thread`` is watched."""
        hops: list[object] = []
        real = asyncio.to_thread

        async def watched(func: Callable[..., object], /, *args: object) -> object:
            hops.append(func)
            return await real(func, *args)

        monkeypatch.setattr(asyncio, "to_thread", watched)
        store = MinioStore(**s3_server.store_kwargs(fresh_bucket()))
        try:
            await store.check()
            hops.clear()
            await store.put("a/small", b"x" * 1000)
            await store.put("a/empty", b"")
            assert await store.get("a/small") == b"x" * 1000
            assert await store.get("a/missing") is None
            assert await store.list("a/") == ["a/empty", "a/small"]
            assert await store.put_if("a/record", b"{}", None) is not None
            assert hops == []
            big = os.urandom(200 * 1024)
            await store.put("a/big", big)
            assert len(hops) == 1
            assert await store.get("a/big") == big
        finally:
            await store.aclose()


class TestSigning:
    def test_a_put_is_signed_as_miniopy_async_signs_it(self) -> None:
        """The worker's own SigV4 (the flush's PUT) against the library's, same request and
        instant: the same Authorization, with an encoded key and a signed content type."""
        import datetime
        from urllib.parse import urlsplit

        from miniopy_async.credentials.credentials import Credentials
        from miniopy_async.signer import sign_v4_s3

        from worker.storage.s3_signing import Signer, object_path

        when = datetime.datetime(2026, 12, 8, 4, 20, 5, tzinfo=datetime.UTC)
        path = object_path("bkt", "sessions/s 1/updates/é+x.seg")
        body_hash = hashlib.sha256(b"segment").hexdigest()
        ours = Signer("AKID", "SECRET", "eu-west-1").sign(
            "PUT",
            "127.0.0.1:9000",
            path,
            body_hash,
            {"Content-Type": "application/octet-stream"},
            now=when.timestamp(),
        )
        theirs = sign_v4_s3(
            "PUT",
            urlsplit(f"http://127.0.0.1:9000{path}"),
            "eu-west-1",
            {
                "Host": "127.0.0.1:9000",
                "Content-Type": "application/octet-stream",
                "x-amz-content-sha256": body_hash,
                "x-amz-date": "20261208T042005Z",
            },
            Credentials("AKID", "SECRET"),
            body_hash,
            when,
        )
        assert ours["authorization"] == dict(theirs)["Authorization"]
        assert ours["x-amz-date"] == "20261208T042005Z"

    @pytest.mark.s3
    async def test_the_server_checks_the_signature(self, s3_server: S3Server) -> None:
        """SeaweedFS verifies what the worker signs (so every round trip in this file checks
        the signer): the right secret stores the object, a wrong one is refused with 403."""
        import aiohttp

        from worker.storage.s3_signing import Signer

        store = MinioStore(**s3_server.store_kwargs(bucket := fresh_bucket()))
        kwargs = s3_server.store_kwargs(bucket)
        host = f"{kwargs['endpoint']}:{kwargs['port']}"
        try:
            await store.check()
            body = b"x" * 10
            digest = hashlib.sha256(body).hexdigest()
            async with aiohttp.ClientSession() as http:
                for secret, status in ((kwargs["secret_key"], 200), ("wrong", 403)):
                    path = f"/{bucket}/k-{status}"
                    headers = Signer(kwargs["access_key"], secret, "us-east-1").sign(
                        "PUT", host, path, digest
                    )
                    async with http.put(f"http://{host}{path}", data=body, headers=headers) as r:
                        assert r.status == status, await r.text()
            assert await store.get("k-200") == body
            assert await store.get("k-403") is None
        finally:
            await store.aclose()

    @pytest.mark.parametrize(
        ("reply", "retry_later"),
        [
            (_http_reply("503 Service Unavailable", "application/xml", _S3_BUSY), True),
            (_http_reply("502 Bad Gateway", "text/html", b"<h1>bad gateway</h1>"), True),
            (_http_reply("403 Forbidden", "application/xml", _S3_DENIED), False),
            (_http_reply("400 Bad Request", "text/plain", b"no"), True),
        ],
        ids=["s3-503", "proxy-502", "s3-403", "not-s3-400"],
    )
    async def test_a_small_puts_errors_are_mapped_as_every_requests(
        self, reply: bytes, retry_later: bool
    ) -> None:
        """The flush's PUT (signed by the worker, not the library) fails as any request does:
        a 5xx with or without an S3 error document, or an answer that is not S3's (a proxy's
        page), means retry later; an S3 error document that retrying cannot fix is an error."""
        async with _tcp_server(reply) as port:
            store = MinioStore("127.0.0.1", port, "bkt", "k", "s", False, region="us-east-1")
            store._bucket_ready = True  # the stand-in answers everything alike: skip the probe
            try:
                with pytest.raises(StorageError) as info:
                    await store.put("sessions/s/updates/1.seg", b"1")
                assert isinstance(info.value, StorageUnavailable) is retry_later
            finally:
                await store.aclose()


@pytest.mark.s3
class TestMinioStoreFailures:
    async def test_dead_server_raises_storage_unavailable_then_recovers(self) -> None:
        """Every op fails fast with StorageUnavailable while S3 is down, and works once it is
        back, with what was stored before the outage."""
        with start_s3_server() as server:
            store = MinioStore(**server.store_kwargs(fresh_bucket()))
            try:
                await store.put("k", b"v")
                await server.astop()
                ops: list[Callable[[], Awaitable[object]]] = [
                    lambda: store.get("k"),
                    lambda: store.put("k", b"v"),
                    lambda: store.delete("k"),
                    lambda: store.list(""),
                    store.check,
                ]
                started = time.monotonic()
                for op in ops:
                    with pytest.raises(StorageUnavailable) as info:
                        await op()
                    assert info.value.cause is not None
                assert time.monotonic() - started < 5
                await server.astart()
                await store.check()
                assert await store.get("k") == b"v"
                await store.put("k", b"again")
                assert await store.get("k") == b"again"
            finally:
                await store.aclose()

    async def test_a_server_that_never_answers_times_out(self) -> None:
        """A hung server is reported as unavailable after the read timeout, not minutes later."""
        async with _tcp_server(b"") as port:
            store = MinioStore("127.0.0.1", port, "bkt", "k", "s", False, read_timeout=0.5)
            try:
                with anyio.fail_after(5):
                    with pytest.raises(StorageUnavailable):
                        await store.get("x")
            finally:
                await store.aclose()

    @pytest.mark.parametrize(
        "reply",
        [
            _http_reply(
                "503 Service Unavailable",
                "application/xml",
                b"<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>",
            ),
            _http_reply("502 Bad Gateway", "text/html", b"<h1>bad gateway</h1>"),
        ],
        ids=["s3-503", "proxy-502"],
    )
    async def test_server_errors_map_to_storage_unavailable(self, reply: bytes) -> None:
        """5xx answers (with or without an S3 error body) mean "retry later"."""
        async with _tcp_server(reply) as port:
            store = MinioStore("127.0.0.1", port, "bkt", "k", "s", False)
            try:
                with pytest.raises(StorageUnavailable):
                    await store.put("x", b"1")
                with pytest.raises(StorageUnavailable):
                    await store.check()
            finally:
                await store.aclose()

    async def test_access_denied_is_a_storage_error_and_unready(self) -> None:
        """A 4xx that retrying cannot fix is a StorageError; readiness still says unavailable."""
        reply = _http_reply(
            "403 Forbidden",
            "application/xml",
            b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
        )
        async with _tcp_server(reply) as port:
            store = MinioStore("127.0.0.1", port, "bkt", "k", "s", False)
            try:
                with pytest.raises(StorageError) as info:
                    await store.get("x")
                assert not isinstance(info.value, StorageUnavailable)
                with pytest.raises(StorageUnavailable):
                    await store.check()
            finally:
                await store.aclose()

    async def test_a_body_cut_short_is_an_error_never_a_shorter_object(self) -> None:
        """Our half of atomic reads: a GET body that ends before its Content-Length (the server
        died mid-response) is StorageUnavailable, never returned as a truncated object."""
        reply = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 4096\r\nConnection: close\r\n\r\n" + b"\x01" * 1000
        )
        async with _tcp_server(reply) as port:
            store = MinioStore("127.0.0.1", port, "bkt", "k", "s", False)
            try:
                with pytest.raises(StorageUnavailable):
                    await store.get("x")
            finally:
                await store.aclose()

    def test_endpoint_must_be_a_host(self) -> None:
        """A URL in MINIO_ENDPOINT is a configuration mistake, reported at construction."""
        with pytest.raises(ValueError, match="bare host"):
            MinioStore("http://minio:9000", 9000, "b", "k", "s", False)

    async def test_s3_server_restarts_on_the_same_port_with_its_objects(self) -> None:
        """The helper the worker tests use: stop and start keep the address and the data."""
        with start_s3_server() as server:
            port = server.port
            store = MinioStore(**server.store_kwargs(fresh_bucket()))
            try:
                await store.put("kept", b"across the restart")
                await server.astop()
                assert not server.running
                await server.astart()
                assert server.running and server.port == port
                assert await store.get("kept") == b"across the restart"
            finally:
                await store.aclose()

    async def test_s3_server_keeps_a_data_dir_it_was_given(self, tmp_path: Path) -> None:
        """A caller's data directory outlives the server object: a new server on it (another
        port, another process) serves what the first one stored."""
        bucket = fresh_bucket()
        with start_s3_server(data_dir=tmp_path / "s3") as first:
            store = MinioStore(**first.store_kwargs(bucket))
            try:
                await store.put("kept", b"by the first server")
            finally:
                await store.aclose()
        assert (tmp_path / "s3").is_dir()
        with start_s3_server(data_dir=tmp_path / "s3") as second:
            store = MinioStore(**second.store_kwargs(bucket))
            try:
                assert await store.get("kept") == b"by the first server"
            finally:
                await store.aclose()

    def test_s3_server_runs_under_its_exec_prefix(self) -> None:
        """``exec_prefix`` is the argv the server runs under (``ip netns exec NAME`` in the
        chaos harness; ``env`` here, which leaves its mark in the server's environment)."""
        with start_s3_server(exec_prefix=["env", "S3SERVER_PREFIXED=yes"]) as server:
            assert server._process is not None
            environ = Path(f"/proc/{server._process.pid}/environ").read_bytes().split(b"\0")
            assert b"S3SERVER_PREFIXED=yes" in environ


@asynccontextmanager
async def _tcp_server(reply: bytes) -> AsyncIterator[int]:
    """A raw TCP server that sends ``reply`` to every request (or hangs when it is empty)."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await stream.receive()
                if not reply:
                    await anyio.sleep_forever()
                await stream.send(reply)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            try:
                yield port
            finally:
                # Nothing awaited in here: an await in the cancelled scope would raise a
                # Cancelled that the task group then absorbs, together with the test's own
                # exception (a failed assertion, a pytest.raises miss), so the test would pass.
                tg.cancel_scope.cancel()
    finally:
        await listener.aclose()
