"""The storage seam: a tiny async key/value Protocol over bytes, and its error tree.

Everything clever (segments, snapshots, merge-on-read, compaction) lives above this seam in
``worker.storage.session_store``, written once for every backend.  A backend only has to move whole
objects; that keeps the contract small enough that one test suite can pin it down for all of them.

Errors raised by stores (and by the layers above them)::

    StorageError                  anything the storage boundary reports on purpose
     ├── StorageUnavailable       network error, timeout, 5xx, disk error: retry later
     │                            (fields: op, key, cause)
     └── CorruptObject            an object exists but cannot be decoded: never skip it
                                  (fields: key, reason)

Programming errors (a hostile or malformed key) are ``ValueError`` and are not part of the tree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

__all__ = [
    "CorruptObject",
    "InstrumentedStore",
    "OnRequest",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "check_key",
    "check_prefix",
]

T = TypeVar("T")


class StorageError(Exception):
    """Base of every error the storage boundary raises deliberately."""


class StorageUnavailable(StorageError):
    """The backend could not serve the request now; the caller keeps its data and retries."""

    def __init__(self, op: str, key: str | None, cause: BaseException | None) -> None:
        self.op = op
        self.key = key
        self.cause = cause
        where = f" {key!r}" if key is not None else ""
        why = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"storage unavailable during {op}{where}{why}")


class CorruptObject(StorageError):
    """An object is present but malformed.

    It is raised rather than skipped because serving a session without one of its objects would
    look exactly like lost edits to every client.
    """

    def __init__(self, key: str | None, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f" {key!r}" if key is not None else ""
        super().__init__(f"corrupt object{where}: {reason}")


MAX_KEY_BYTES = 1024
MAX_COMPONENT_BYTES = 255


def check_key(key: str) -> str:
    """Return ``key`` if it is a plain relative "a/b/c" key, else raise ``ValueError``.

    Every store applies the same rules, so a key that works on the laptop's local store also
    works on MinIO, and a hostile key can never name a file outside the local store's root.
    """
    if not key:
        raise ValueError("storage key must not be empty")
    _check_chars(key, "key")
    for part in key.split("/"):
        _check_component(part, key)
    return key


def check_prefix(prefix: str) -> str:
    """Like ``check_key`` but the last component may be partial or empty ("a/", "a/b", "")."""
    if not prefix:
        return prefix
    _check_chars(prefix, "prefix")
    *dirs, last = prefix.split("/")
    for part in dirs:
        _check_component(part, prefix)
    if last in (".", ".."):
        raise ValueError(f"storage prefix must not contain {last!r} components: {prefix!r}")
    return prefix


def _check_chars(text: str, what: str) -> None:
    if "\0" in text or "\\" in text:
        raise ValueError(f"storage {what} must not contain NUL or backslash: {text!r}")
    if text.startswith("/"):
        raise ValueError(f"storage {what} must be relative: {text!r}")
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"storage {what} longer than {MAX_KEY_BYTES} bytes: {text[:64]!r}...")


def _check_component(part: str, key: str) -> None:
    if part in ("", ".", ".."):
        raise ValueError(f"storage key has an empty, '.' or '..' component: {key!r}")
    if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise ValueError(f"storage key component longer than {MAX_COMPONENT_BYTES} bytes: {key!r}")


@runtime_checkable
class Store(Protocol):
    """Whole-object storage of bytes under string keys ("a/b/c", no leading slash)."""

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or ``None`` when there is no such key."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Store the object atomically: a reader sees all of ``data`` or the previous state."""
        ...

    async def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object and an opaque version of it (for ``put_if``), or ``None``."""
        ...

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        """Compare-and-swap: store ``data`` only if the object is still at ``version`` (``None``:
        only if it does not exist). Returns the new version (what ``get_versioned`` would now
        report), or None, with nothing written, when the object moved meanwhile.

        For the few mutable objects (a git branch ref, ownership records); write them only
        through here.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is a no-op."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (a plain string prefix), sorted."""
        ...

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        """Like ``list``, with each object's size in bytes (the same one request on S3); for
        stored-bytes metrics, never for correctness."""
        ...

    async def check(self) -> None:
        """Raise ``StorageUnavailable`` unless the backend answers; used by readiness."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources; the store is unusable afterwards."""
        ...


OnRequest = Callable[[str, str], None]
"""``on_request(op, outcome)`` with outcome ``"ok"`` or ``"error"``."""


class InstrumentedStore:
    """Wraps any Store so every request is counted once, whatever the backend.

    The worker passes a callback that increments ``collab_storage_requests_total{op,outcome}``;
    keeping the counting here means a new backend cannot forget it.  Cancellation is not counted:
    it says nothing about the health of the storage.
    """

    def __init__(self, store: Store, on_request: OnRequest) -> None:
        self.inner = store
        self._on_request = on_request

    async def _counted(self, op: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except Exception:
            self._on_request(op, "error")
            raise
        self._on_request(op, "ok")
        return result

    async def get(self, key: str) -> bytes | None:
        return await self._counted("get", self.inner.get(key))

    async def put(self, key: str, data: bytes) -> None:
        await self._counted("put", self.inner.put(key, data))

    async def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        return await self._counted("get", self.inner.get_versioned(key))

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        return await self._counted("put_if", self.inner.put_if(key, data, version))

    async def delete(self, key: str) -> None:
        await self._counted("delete", self.inner.delete(key))

    async def list(self, prefix: str) -> list[str]:
        return await self._counted("list", self.inner.list(prefix))

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        return await self._counted("list", self.inner.list_sizes(prefix))

    async def check(self) -> None:
        await self._counted("check", self.inner.check())

    async def aclose(self) -> None:
        await self.inner.aclose()
