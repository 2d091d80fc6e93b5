"""What storage holds after a chaos run, read with the checker's own code.

Nothing here comes from the worker (no ``worker``, ``contract``, ``router`` or ``ops`` import,
and not the worker's S3 client either): a bug in the worker's reading or writing must not be
able to hide itself by being repeated here. From docs/storage.md and the worker's own
description of its format, re-implemented:

- a session's state is every object under ``sessions/{id}/updates/`` (``.seg``) and
  ``sessions/{id}/snapshots/`` (``.snap``); updates are listed before snapshots, so a segment
  compacted away between the two listings is found in the snapshot that replaced it, and a
  listed object that is gone when read makes the whole read start over;
- each object is ``b"CSEG"``, varuint version (1), varuint count, then count x (varuint length,
  UTF-8 document name, varuint length, Yjs update), then a CRC-32 (little-endian) of all that;
- document ``""`` is the session's index, any other name a file whose text is the ``Y.Text``
  named ``content``; a file's state is every update for it merged (pycrdt decodes Yjs).

S3 requests are plain httpx with an AWS Signature V4 written here: ListObjectsV2 and GetObject.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import httpx
from pycrdt import Doc, Text

MAGIC = b"CSEG"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_READ_ATTEMPTS = 8


class StorageError(RuntimeError):
    """Storage could not be read, or holds something that is not a valid object."""


@dataclass(frozen=True)
class S3Config:
    endpoint: str
    port: int
    bucket: str
    access_key: str
    secret_key: str
    secure: bool = False
    region: str = "us-east-1"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> S3Config:
        return cls(
            endpoint=str(d["endpoint"]),
            port=int(d["port"]),
            bucket=str(d["bucket"]),
            access_key=str(d["access_key"]),
            secret_key=str(d["secret_key"]),
            secure=bool(d.get("secure", False)),
            region=str(d.get("region", "us-east-1")),
        )


def _uri(value: str, safe: str) -> str:
    return quote(value, safe=safe)


class S3Reader:
    """Two read-only S3 calls, signed with SigV4 (path-style addressing)."""

    def __init__(self, config: S3Config, timeout: float = 10.0) -> None:
        self.config = config
        scheme = "https" if config.secure else "http"
        default = 443 if config.secure else 80
        self.host = (
            config.endpoint if config.port == default else f"{config.endpoint}:{config.port}"
        )
        self.base = f"{scheme}://{self.host}"
        self._http = httpx.Client(timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> S3Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, query: list[tuple[str, str]]) -> httpx.Response:
        canonical_path = _uri(path, "/-_.~")
        canonical_query = "&".join(f"{_uri(k, '-_.~')}={_uri(v, '-_.~')}" for k, v in sorted(query))
        headers = self._sign("GET", canonical_path, canonical_query)
        url = self.base + canonical_path + (f"?{canonical_query}" if canonical_query else "")
        try:
            return self._http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise StorageError(f"GET {path}: {type(exc).__name__}: {exc}") from None

    def _sign(self, method: str, path: str, query: str) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers = {"host": self.host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{n}:{headers[n]}\n" for n in names),
                signed,
                _EMPTY_SHA256,
            ]
        )
        scope = f"{day}/{self.config.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.config.secret_key).encode()
        for part in (day, self.config.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.config.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers

    def objects(self, prefix: str) -> list[tuple[str, int]]:
        """Every key under ``prefix`` with its size in bytes (all pages)."""
        found: list[tuple[str, int]] = []
        token: str | None = None
        for _ in range(100_000):  # pages of 1,000 keys: bounded far above any run
            query = [("list-type", "2"), ("prefix", prefix)]
            if token:
                query.append(("continuation-token", token))
            response = self._get(f"/{self.config.bucket}", query)
            if response.status_code != 200:
                raise StorageError(
                    f"list {prefix}: HTTP {response.status_code} {response.text[:200]}"
                )
            root = ElementTree.fromstring(response.content)
            for item in root:
                if _local(item.tag) == "Contents":
                    found.append(
                        (_child_text(item, "Key") or "", int(_child_text(item, "Size") or 0))
                    )
            truncated = _child_text(root, "IsTruncated") == "true"
            token = _child_text(root, "NextContinuationToken")
            if not truncated or not token:
                return found
        raise StorageError(f"list {prefix}: too many pages")

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (all pages)."""
        return [key for key, _ in self.objects(prefix)]

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key (any more)."""
        response = self._get(f"/{self.config.bucket}/{key}", [])
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise StorageError(f"get {key}: HTTP {response.status_code} {response.text[:200]}")
        length = response.headers.get("content-length")
        if length is not None and int(length) != len(response.content):
            raise StorageError(f"get {key}: {len(response.content)} bytes of {length}")
        return response.content


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(root: ElementTree.Element, name: str) -> str | None:
    for el in root:
        if _local(el.tag) == name:
            return el.text
    return None


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(data):
            raise StorageError("varuint runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise StorageError("varuint longer than 10 bytes")


def _varbytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _varuint(data, pos)
    if pos + length > len(data):
        raise StorageError(f"a {length}-byte field runs past the end")
    return data[pos : pos + length], pos + length


def decode_object(data: bytes, key: str = "") -> list[tuple[str, bytes]]:
    """A segment or snapshot: its (document name, Yjs update) pairs; StorageError if malformed."""
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        raise StorageError(f"{key}: not a CSEG object")
    body, crc = data[:-4], int.from_bytes(data[-4:], "little")
    if zlib.crc32(body) != crc:
        raise StorageError(f"{key}: CRC mismatch")
    version, pos = _varuint(body, len(MAGIC))
    if version != 1:
        raise StorageError(f"{key}: version {version}")
    count, pos = _varuint(body, pos)
    entries = []
    for _ in range(count):
        name, pos = _varbytes(body, pos)
        update, pos = _varbytes(body, pos)
        entries.append((name.decode("utf-8"), update))
    if pos != len(body):
        raise StorageError(f"{key}: {len(body) - pos} trailing bytes")
    return entries


@dataclass
class SessionState:
    """A session's stored files: path → text (the index document is left out)."""

    texts: dict[str, str]
    objects: int


def read_session(reader: S3Reader, session: str) -> SessionState:
    prefix = f"sessions/{session}/"
    for _ in range(_READ_ATTEMPTS):
        keys = [k for k in reader.list(prefix + "updates/") if k.endswith(".seg")]
        keys += [k for k in reader.list(prefix + "snapshots/") if k.endswith(".snap")]
        blobs = {key: reader.get(key) for key in keys}
        if all(blob is not None for blob in blobs.values()):
            return SessionState(_merge(blobs), len(keys))
        time.sleep(0.2)  # compacted under us: the next listing shows its snapshot
    raise StorageError(f"{prefix}: objects kept vanishing in {_READ_ATTEMPTS} listings")


def _merge(blobs: dict[str, bytes | None]) -> dict[str, str]:
    docs: dict[str, Doc[Any]] = {}
    for key in sorted(blobs):
        data = blobs[key]
        assert data is not None
        for name, update in decode_object(data, key):
            if name == "":
                continue
            doc = docs.setdefault(name, Doc())
            try:
                doc.apply_update(update)
            except Exception as exc:  # pycrdt's decoder error
                raise StorageError(f"{key}: document {name!r}: {exc}") from None
    return {name: str(doc.get("content", type=Text)) for name, doc in docs.items()}
