"""The embedded store: one file per key under a root directory, for laptops and tests.

Every file operation runs in a worker thread so a slow disk never stalls the event loop.
Atomicity comes from the usual write-to-temp-then-``os.replace`` in the key's own directory
(so the rename never crosses a filesystem); the temp names use a prefix that no valid key may
use, so ``list`` can skip them and a crashed writer's leftovers are never mistaken for data.

Known difference from S3: a key cannot also be a "directory" of other keys (``a`` and ``a/b``
both existing), because a file system cannot hold both.  The session layout never needs that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import fcntl
import hashlib
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from worker.storage.base import StorageUnavailable, check_key, check_prefix

__all__ = ["LocalStore"]

_TMP_PREFIX = ".tmp-"
_tmp_ids = itertools.count()
_background: set[asyncio.Future[None]] = set()  # batch writers, referenced until they finish


class _Any(enum.Enum):
    ANY = "any"


_ANY = _Any.ANY  # a write's condition: none (a plain put)
_Outcome = str | None | OSError  # the new version, None (condition failed), or the error


@dataclass(slots=True)
class _Write:
    path: Path
    data: bytes
    condition: str | _Any | None
    done: asyncio.Future[str | None]

    @property
    def conditional(self) -> bool:
        return self.condition is not _ANY


class LocalStore:
    """A ``Store`` over a directory tree; ``key`` is the path relative to ``root``."""

    def __init__(self, root: Path, *, fsync: bool = True, threads: int = 4) -> None:
        self.root = Path(root).absolute()
        self._fsync = fsync
        # A few threads keep a slow disk off the event loop; many would only fight over the
        # GIL and the disk (measured: 200 concurrent puts cost 2-3x the CPU of 4 at a time).
        self._limiter = anyio.CapacityLimiter(threads)
        # Puts queue up and are written in batches, one thread hop per batch: a worker's group
        # commit issues one put per dirty session per flush tick, and a hop per put cost more
        # CPU than the write itself.
        self._queue: list[_Write] = []
        self._writers = 0
        self._max_writers = max(1, threads // 2)

    def _path(self, key: str) -> Path:
        check_key(key)
        if any(part.startswith(_TMP_PREFIX) for part in key.split("/")):
            raise ValueError(f"storage key components must not start with {_TMP_PREFIX!r}: {key!r}")
        return self.root.joinpath(*key.split("/"))

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await anyio.to_thread.run_sync(_read, path, limiter=self._limiter)
        except OSError as exc:
            raise StorageUnavailable("get", key, exc) from exc

    async def put(self, key: str, data: bytes) -> None:
        try:
            await self._queued(self._path(key), data, _ANY)
        except OSError as exc:
            raise StorageUnavailable("put", key, exc) from exc

    async def _queued(self, path: Path, data: bytes, condition: str | _Any | None) -> str | None:
        """Writes through the batch queue: the object's new version, or None when ``condition``
        (the version it must have now; None: absent) does not hold."""
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(path, bytes(data), condition, done))
        if self._writers < self._max_writers:
            self._writers += 1
            _background.add(task := asyncio.ensure_future(self._write_queued()))
            task.add_done_callback(_background.discard)
        return await asyncio.shield(done)

    def _next_batch(self) -> list[_Write]:
        """The queue's head, up to the second conditional write to one key (or any write to a
        key a conditional one in the batch holds): that one must see the first's outcome, and
        one thread may not take the same lock file twice."""
        batch: list[_Write] = []
        locked: set[Path] = set()
        written: set[Path] = set()
        for item in self._queue:
            if item.path in locked or (item.conditional and item.path in written):
                break
            batch.append(item)
            written.add(item.path)
            if item.conditional:
                locked.add(item.path)
        del self._queue[: len(batch)]
        return batch

    async def _write_queued(self) -> None:
        batch: list[_Write] = []
        try:
            while self._queue:
                batch = self._next_batch()
                outcomes = await anyio.to_thread.run_sync(
                    _write_batch,
                    [(w.path, w.data, w.condition) for w in batch],
                    self._fsync,
                    limiter=self._limiter,
                )
                for item, outcome in zip(batch, outcomes, strict=True):
                    if item.done.done():
                        continue
                    if isinstance(outcome, OSError):
                        item.done.set_exception(outcome)
                    else:
                        item.done.set_result(outcome)
        except BaseException as exc:  # e.g. cancelled at shutdown: nobody may wait forever
            for item in batch + self._queue:
                if not item.done.done():
                    item.done.set_exception(OSError(f"local store writer stopped: {exc!r}"))
            self._queue = []
            raise
        finally:
            self._writers -= 1

    async def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = await self.get(key)
        return None if data is None else (data, _version(data))

    async def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        # Through the batch queue too: a join storm claims an owner record per new session, and
        # two fsyncs of its own per claim showed in connect latency (docs/benchmarks.md).
        try:
            return await self._queued(self._path(key), data, version)
        except OSError as exc:
            raise StorageUnavailable("put_if", key, exc) from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await anyio.to_thread.run_sync(_unlink, path, limiter=self._limiter)
        except OSError as exc:
            raise StorageUnavailable("delete", key, exc) from exc

    async def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        try:
            return await anyio.to_thread.run_sync(_list, self.root, prefix, limiter=self._limiter)
        except OSError as exc:
            raise StorageUnavailable("list", prefix, exc) from exc

    async def list_sizes(self, prefix: str) -> dict[str, int]:
        check_prefix(prefix)
        try:
            return await anyio.to_thread.run_sync(
                _list_sizes, self.root, prefix, limiter=self._limiter
            )
        except OSError as exc:
            raise StorageUnavailable("list", prefix, exc) from exc

    async def check(self) -> None:
        try:
            await anyio.to_thread.run_sync(_check_root, self.root, limiter=self._limiter)
        except OSError as exc:
            raise StorageUnavailable("check", None, exc) from exc

    async def aclose(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        # A missing file, a "directory" key, or a parent that is a file: all mean "no such key".
        return None


def _write_batch(items: list[tuple[Path, bytes, str | _Any | None]], fsync: bool) -> list[_Outcome]:
    """Writes a batch of objects, each whole, durable, or absent, with two syncs per batch.

    A conditional item (compare and swap) holds its key's lock file from its read to its rename;
    the locks are taken in path order, so two processes' batches over one root cannot deadlock.
    Every temp file is written, then one ``syncfs`` makes all their data durable, then each is
    renamed into place (in the batch's order: a later put of a key wins), then a second
    ``syncfs`` makes the renames durable; only then does any write of the batch return. A crash
    in between leaves each object whole or absent (a rename is atomic, and its data was durable
    before it). Per-object fsyncs (two each: file and directory) cost the worker more CPU in the
    kernel than everything else together under many small sessions (docs/benchmarks.md).
    Without ``syncfs`` (not Linux), or for a lone item, per-object fsyncs.
    """
    if not fsync or _SYNCFS is None or len(items) == 1:
        return [_write_one(path, data, condition, fsync) for path, data, condition in items]
    result: list[_Outcome] = [None] * len(items)
    with _locked(sorted({p for p, _, c in items if c is not _ANY})) as locks:
        written: list[tuple[int, str, Path]] = []
        for i, (path, data, condition) in enumerate(items):
            try:
                if condition is not _ANY:
                    if path in locks.failed:
                        result[i] = locks.failed[path]
                        continue
                    current = _read(path)
                    if (None if current is None else _version(current)) != condition:
                        continue  # the condition does not hold: None
                written.append((i, _write_temp(path, data), path))
            except OSError as exc:
                result[i] = exc
        if not written:
            return result
        try:
            _sync_filesystem(items[0][0])
        except OSError as exc:
            for i, tmp, _ in written:
                result[i] = exc
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return result
        for i, tmp, path in written:
            try:
                os.replace(tmp, path)
                result[i] = "" if items[i][2] is _ANY else _version(items[i][1])
            except OSError as exc:
                result[i] = exc
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        try:
            _sync_filesystem(items[0][0])
        except OSError as exc:
            for i, _, _ in written:
                if not isinstance(result[i], OSError):
                    result[i] = exc
    return result


def _write_one(path: Path, data: bytes, condition: str | _Any | None, fsync: bool) -> _Outcome:
    try:
        if condition is _ANY:
            _write_atomic(path, data, fsync)
            return ""  # a plain put's version is never asked for
        return _put_if(path, data, condition, fsync)
    except OSError as exc:
        return exc


@dataclass
class _Locks:
    failed: dict[Path, OSError]  # keys whose lock file could not be taken, and why


@contextlib.contextmanager
def _locked(paths: list[Path]) -> Iterator[_Locks]:
    """Each key's lock file taken exclusively (in the order given), released on exit."""
    locks = _Locks(failed={})
    fds: list[int] = []
    try:
        for path in paths:
            try:
                fds.append(_lock(path))
            except OSError as exc:
                locks.failed[path] = exc
        yield locks
    finally:
        for fd in fds:
            os.close(fd)  # releases the lock


def _write_temp(path: Path, data: bytes, *, fsync: bool = False) -> str:
    """The object's bytes in a temp file beside it (synced when ``fsync``); the temp name.

    Plain ``os`` calls, and ``mkdir`` only when the directory is missing: a group commit
    writes one of these per session per flush interval, so every syscall shows in the CPU.
    """
    directory = os.path.dirname(path)
    tmp = f"{directory}/{_TMP_PREFIX}{os.path.basename(path)}.{os.getpid()}.{next(_tmp_ids)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _load_syncfs() -> Callable[[int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return syncfs


_SYNCFS = _load_syncfs()


def _sync_filesystem(path: Path) -> None:
    """Every write on the file system holding ``path`` made durable (Linux ``syncfs``)."""
    assert _SYNCFS is not None
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    """Temp file, fsync, rename, fsync the directory: the object is whole, durable, or absent."""
    tmp = _write_temp(path, data, fsync=fsync)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        _fsync_dir(os.path.dirname(path))


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put_if(path: Path, data: bytes, version: str | None, fsync: bool) -> str | None:
    """Compare and swap under an exclusive lock file that every process on this root shares
    (``collab up`` runs several workers over one directory)."""
    fd = _lock(path)
    try:
        current = _read(path)
        if (None if current is None else _version(current)) != version:
            return None
        _write_atomic(path, data, fsync)
        return _version(data)
    finally:
        os.close(fd)  # releases the lock


def _lock(path: Path) -> int:
    """The key's lock file (hidden from ``list``), held exclusively; close the fd to release."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    lock = f"{directory}/{_TMP_PREFIX}{os.path.basename(path)}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except IsADirectoryError:
        pass  # a "directory" is not an object, so there is nothing to delete


def _list(root: Path, prefix: str) -> list[str]:
    # Walk only the deepest directory the prefix pins down, prune subdirectories that cannot
    # match, then filter by the full prefix: "sessions/ab" matches "sessions/abc/x", as on S3.
    base_dir = prefix[: prefix.rfind("/") + 1]
    start = root.joinpath(*base_dir.split("/")) if base_dir else root
    keys: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start, onerror=_raise_unless_missing):
        rel = Path(dirpath).relative_to(root).as_posix()
        rel_prefix = "" if rel == "." else rel + "/"
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(_TMP_PREFIX) and _may_match(rel_prefix + d + "/", prefix)
        ]
        for name in filenames:
            key = rel_prefix + name
            if not name.startswith(_TMP_PREFIX) and key.startswith(prefix):
                keys.append(key)
    keys.sort()
    return keys


def _list_sizes(root: Path, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for key in _list(root, prefix):
        try:
            sizes[key] = root.joinpath(*key.split("/")).stat().st_size
        except FileNotFoundError:  # deleted since the walk: not there any more
            pass
    return sizes


def _may_match(dir_prefix: str, prefix: str) -> bool:
    return dir_prefix.startswith(prefix) or prefix.startswith(dir_prefix)


def _raise_unless_missing(exc: OSError) -> None:
    # os.walk swallows errors by default; a listing that silently skips an unreadable directory
    # would make a load look complete while missing data.
    if not isinstance(exc, FileNotFoundError | NotADirectoryError):
        raise exc


def _check_root(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"storage directory {root} is not writable")
