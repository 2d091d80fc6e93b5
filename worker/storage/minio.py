"""The MinIO / S3 store, over miniopy-async.

Choices that differ from the client library's defaults, and why:

* Our own aiohttp session with short connect/read timeouts and no retry wrapper.  The library's
  default (5-minute timeouts, five retries with back-off) would hide a dead server for minutes;
  the worker has its own retry-with-backoff loop and must report the outage in readiness within
  seconds.  aiohttp still transparently retries an idempotent request once when a pooled
  keep-alive connection turns out to be dead (e.g. after the server restarted).
* A small PUT (a flush's segment, the request a busy worker makes most) is signed by the
  worker (``worker.storage.s3_signing``) and sent on the same aiohttp session; everything else
  (reads, listings, conditional writes, large objects, AWS's own endpoints) goes through the
  library. Its errors are raised as the library's, so they map the same way.
* The bucket is created on first use, and again whenever a request reports ``NoSuchBucket``.
  A missing bucket at runtime is the same situation as a missing bucket at start-up (an empty
  store); re-creating it lets a restarted, empty S3 server take writes again without restarting
  every worker.
"""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import BinaryIO, TypeVar

import aiohttp
import anyio
from aiohttp.typedefs import LooseHeaders
from miniopy_async.api import Minio  # the package __init__ hides its types from mypy
from miniopy_async.credentials.credentials import Credentials
from miniopy_async.error import InvalidResponseError, S3Error, ServerError
from miniopy_async.helpers import DictType, sha256_hash

from worker.storage.base import StorageError, StorageUnavailable, check_key, check_prefix
from worker.storage.s3_signing import Signer, object_path

__all__ = ["MinioStore"]

T = TypeVar("T")

_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed"}
)
_BUCKET_TAKEN = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


class MinioStore:
    """A ``Store`` backed by one bucket of an S3-compatible server."""

    def __init__(
        self,
        endpoint: str,
        port: int,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool,
        *,
        region: str | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
    ) -> None:
        if "://" in endpoint or "/" in endpoint:
            raise ValueError(f"MinIO endpoint must be a bare host name, not a URL: {endpoint!r}")
        self.bucket = bucket
        self._client = _Minio(
            f"{endpoint}:{port}",
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,
        )
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        # A small PUT (a flush's segment) is signed and sent here, not through miniopy-async:
        # s3_signing's docstring. Path-style URLs only, as miniopy uses them for every
        # endpoint but AWS's own (which get the library's virtual-host URLs), with static keys.
        self._scheme = "https" if secure else "http"
        self._host = f"{endpoint}:{port}"
        self._lean = bool(access_key and secret_key) and not endpoint.endswith("amazonaws.com")
        self._signer: Signer | None = None
        self._keys = (access_key, secret_key)
        self._bucket_ready = False
        self._bucket_lock = anyio.Lock()
        self._closed = False

    async def get(self, key: str) -> bytes | None:
        found = await self.get_versioned(key)
        return None if found is None else found[0]

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        if self._lean and len(data) <= _INLINE_HASH_BYTES:
            await self._call("put", key, lambda: self._lean_put(key, data))
            return

        async def put() -> None:
            # One plain PUT (part_size == length), which S3 makes visible all at once: atomic.
            # The body goes as a stream, so aiohttp never blocks the loop on a large bytes body;
            # our objects stay far below the 5 GiB single-PUT limit.
            size = len(data)
            await self._client.put_object(self.bucket, key, io.BytesIO(data), size, part_size=size)

        await self._call("put", key, put)

    async def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        check_key(key)

        async def get() -> tuple[bytes, str] | None:
            try:
                response = await self._client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return None
                raise
            try:
                # All of the body or an error: aiohttp raises ClientPayloadError (mapped to
                # StorageUnavailable) when it ends before its Content-Length, so a connection
                # cut mid-body never returns a truncated object.
                data: bytes = await response.read()
                etag = response.headers.get("ETag", "").strip('"')
            finally:
                response.release()
            return data, etag

        return await self._call("get", key, get)

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        """A conditional PUT (``If-Match`` / ``If-None-Match: *``; S3 since 2024, MinIO).

        miniopy-async's ``put_object`` would turn these headers into user metadata, so the
        request goes through its lower-level call.
        """
        check_key(key)
        condition = {"If-None-Match": "*"} if version is None else {"If-Match": f'"{version}"'}

        async def put() -> str | None:
            try:
                response = await self._client._execute(  # private API: see the docstring
                    "PUT",
                    self.bucket,
                    key,
                    body=data,
                    headers={"Content-Type": "application/octet-stream", **condition},
                )
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                    return None
                raise
            try:
                etag = response.headers.get("ETag", "").strip('"')
            finally:
                response.release()
            if not etag:
                raise StorageUnavailable("put_if", key, RuntimeError("PUT answered no ETag"))
            return etag

        return await self._call("put_if", key, put)

    async def delete(self, key: str) -> None:
        check_key(key)

        async def delete() -> None:
            await self._client.remove_object(self.bucket, key)  # S3 DELETE of nothing is fine

        await self._call("delete", key, delete)

    async def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)

        async def list_keys() -> list[str]:
            objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            names = [obj.object_name async for obj in objects]
            return sorted(name for name in names if name is not None)

        return await self._call("list", prefix, list_keys)

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        check_prefix(prefix)

        async def list_sized() -> dict[str, int]:
            objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return {
                obj.object_name: obj.size or 0
                async for obj in objects
                if obj.object_name is not None
            }

        return await self._call("list", prefix, list_sized)

    async def check(self) -> None:
        """Readiness: one request to the server; any failure to reach a usable bucket counts."""
        try:
            await self._call("check", None, self._probe_bucket)
        except StorageUnavailable:
            raise
        except StorageError as exc:
            raise StorageUnavailable("check", None, exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _call(self, op: str, key: str | None, request: Callable[[], Awaitable[T]]) -> T:
        try:
            await self._ensure_bucket()
            try:
                return await request()
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
            self._bucket_ready = False
            await self._ensure_bucket()
            return await request()
        except (S3Error, ServerError, InvalidResponseError, aiohttp.ClientError, OSError) as exc:
            raise _map_error(op, key, exc) from exc

    async def _lean_put(self, key: str, data: bytes) -> None:
        """One signed PUT over the store's aiohttp session; errors as miniopy-async raises them
        (an S3 error document as ``S3Error``, a 5xx without one as ``ServerError``), so
        ``_call`` maps and retries them the same way."""
        assert self._session is not None  # _call made it
        if self._signer is None:
            region = await self._client._get_region(self.bucket)  # private API: cached by it
            self._signer = Signer(*self._keys, region)
        path = object_path(self.bucket, key)
        headers = self._signer.sign(
            "PUT",
            self._host,
            path,
            sha256_hash(data) if data else _EMPTY_SHA256,
            {"content-type": "application/octet-stream"},
        )
        url = f"{self._scheme}://{self._host}{path}"
        async with self._session.put(url, data=data, headers=headers) as response:
            if response.status == 200:
                return
            body = await response.read()
            raise _error_of(response, body, key)

    async def _ensure_bucket(self) -> None:
        if self._closed:
            raise RuntimeError("MinioStore used after aclose()")
        if self._session is None:
            # Created here, inside the event loop, because aiohttp sessions belong to one loop.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=32)
            )
            self._client.set_session(self._session)
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await self._probe_bucket()

    async def _probe_bucket(self) -> None:
        """HEAD the bucket, creating it when missing; also the whole of ``check``."""
        if not await self._client.bucket_exists(self.bucket):
            try:
                await self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in _BUCKET_TAKEN:  # another worker may have won the race
                    raise
        self._bucket_ready = True


def _error_of(response: aiohttp.ClientResponse, body: bytes, key: str) -> Exception:
    """What miniopy-async would raise for this answer to a PUT of ``key``."""
    if body and "xml" in response.headers.get("Content-Type", ""):
        try:
            return S3Error.fromxml(response, body.decode("utf-8", "replace"))
        except ET.ParseError:
            pass
    if response.status >= 500:
        status = response.status
        return ServerError(f"server failed with HTTP status code {status}", status)
    code = {403: "AccessDenied", 404: "NoSuchBucket"}.get(response.status)
    if code is not None:
        return S3Error(code, code, key, None, None, response, object_name=key)
    return InvalidResponseError(
        response.status, response.headers.get("Content-Type"), body.decode("utf-8", "replace")
    )


def _map_error(op: str, key: str | None, exc: Exception) -> StorageError:
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        if status >= 500 or exc.code in _TRANSIENT_CODES:
            return StorageUnavailable(op, key, exc)
        where = f" {key!r}" if key is not None else ""
        return StorageError(f"storage {op}{where} failed: {exc.code}: {exc.message}")
    # Timeouts, refused/reset connections, 5xx without an S3 error body, or a non-S3 answer
    # (a proxy's HTML error page): all mean "try again later".
    return StorageUnavailable(op, key, exc)


class _Minio(Minio):
    """miniopy-async, hashing small bodies (and the empty body of a GET or LIST) on the loop.

    Over plain HTTP, a signed request carries the SHA-256 of its body, and miniopy-async always
    computes it in a thread (``asyncio.to_thread``), even for a request without a body. For the
    segments a worker writes (a few hundred bytes to a few KB) the thread hop costs far more
    than the hash: profiled, it was a third of the client's CPU per PUT, and in a join storm
    (GETs and LISTs, no body at all) 8 % of the worker's samples (docs/benchmarks.md). Bodies
    up to 64 KiB are hashed inline (a few microseconds), an empty one not at all; larger ones
    still go to a thread. The library builds the rest of the headers and signs the request as
    always: it is asked for the headers of a bodiless, unsigned request, and the body's length,
    hash and session token are added here.
    """

    async def _build_headers(
        self,
        host: str,
        headers: LooseHeaders | DictType | None,
        body: bytes | BinaryIO | None,
        creds: Credentials | None,
    ) -> tuple[dict[str, str], datetime]:
        size = (
            0
            if body is None
            else len(body)
            if isinstance(body, bytes)
            else body.getbuffer().nbytes
            if isinstance(body, io.BytesIO)
            else None
        )
        if creds is None or self._base_url.is_https or size is None or size > _INLINE_HASH_BYTES:
            return await super()._build_headers(host, headers, body, creds)
        built, date = await super()._build_headers(host, headers, None, None)
        if size:
            built["Content-Length"] = str(size)
        built["x-amz-content-sha256"] = sha256_hash(body) if size else _EMPTY_SHA256
        if creds.session_token:
            built["X-Amz-Security-Token"] = creds.session_token
        return built, date


_INLINE_HASH_BYTES = 64 * 1024
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
