"""The embedded store: one file per key under a root directory, for laptops and tests.

Every file operation runs in a worker thread so a slow disk never stalls the event loop.
Atomicity comes from the usual write-to-temp-then-``os.replace`` in the key's own directory
(so the rename never crosses a filesystem); the temp names use a prefix that no valid key may
use, so ``list`` can skip them and a crashed writer's leftovers are never mistaken for data.

Known difference from S3: a key cannot also be a "directory" of other keys (``a`` and ``a/b``
both existing), because a file system cannot hold both.  The session layout never needs that.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import anyio.to_thread

from worker.storage.base import StorageUnavailable, check_key, check_prefix

__all__ = ["LocalStore"]

_TMP_PREFIX = ".tmp-"


class LocalStore:
    """A ``Store`` over a directory tree; ``key`` is the path relative to ``root``."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self._fsync = fsync

    def _path(self, key: str) -> Path:
        check_key(key)
        if any(part.startswith(_TMP_PREFIX) for part in key.split("/")):
            raise ValueError(f"storage key components must not start with {_TMP_PREFIX!r}: {key!r}")
        return self.root.joinpath(*key.split("/"))

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await anyio.to_thread.run_sync(_read, path)
        except OSError as exc:
            raise StorageUnavailable("get", key, exc) from exc

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            await anyio.to_thread.run_sync(_write_atomic, path, bytes(data), self._fsync)
        except OSError as exc:
            raise StorageUnavailable("put", key, exc) from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await anyio.to_thread.run_sync(_unlink, path)
        except OSError as exc:
            raise StorageUnavailable("delete", key, exc) from exc

    async def list(self, prefix: str) -> list[str]:
        check_prefix(prefix)
        try:
            return await anyio.to_thread.run_sync(_list, self.root, prefix)
        except OSError as exc:
            raise StorageUnavailable("list", prefix, exc) from exc

    async def check(self) -> None:
        try:
            await anyio.to_thread.run_sync(_check_root, self.root)
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


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{secrets.token_hex(6)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY)
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
