"""Durable storage: the ``Store`` seam, its two backends, and sessions on top of it.

``open_store`` is the one place that chooses a backend, so the worker, the CLI's
import/export/log commands and tests all get the same store for the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.storage.base import (
    CorruptObject,
    InstrumentedStore,
    OnRequest,
    StorageError,
    StorageUnavailable,
    Store,
    check_key,
    check_prefix,
)
from worker.storage.codec import decode_segment, encode_segment
from worker.storage.local import LocalStore
from worker.storage.session_store import (
    CompactResult,
    LoadedSession,
    SessionMeta,
    SessionStore,
    Survey,
)

if TYPE_CHECKING:
    from worker.settings import StorageSettings
    from worker.storage.minio import MinioStore


def __getattr__(name: str) -> Any:
    # The MinIO client (aiohttp and friends) costs ~15 MB of memory; a worker on the embedded
    # store never loads it.
    if name == "MinioStore":
        from worker.storage.minio import MinioStore

        return MinioStore
    raise AttributeError(name)


__all__ = [
    "CompactResult",
    "CorruptObject",
    "InstrumentedStore",
    "LoadedSession",
    "LocalStore",
    "MinioStore",
    "OnRequest",
    "SessionMeta",
    "SessionStore",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "Survey",
    "check_key",
    "check_prefix",
    "decode_segment",
    "encode_segment",
    "open_store",
]


def open_store(
    *,
    endpoint: str | None = None,
    port: int = 9000,
    bucket: str = "sessions",
    access_key: str = "",
    secret_key: str = "",
    secure: bool = False,
    storage_dir: Path | str = Path(".collab/storage"),
    on_request: OnRequest | None = None,
) -> Store:
    """MinIO when ``endpoint`` is set, else the local store under ``storage_dir``.

    Nothing is contacted here; the first request (or ``check()``) connects, so building the
    store never blocks start-up.  Pass ``on_request`` to count every request for metrics.
    """
    store: Store
    if endpoint:
        from worker.storage.minio import MinioStore

        store = MinioStore(endpoint, port, bucket, access_key, secret_key, secure)
    else:
        store = LocalStore(Path(storage_dir))
    if on_request is not None:
        store = InstrumentedStore(store, on_request)
    return store


def store_for(cfg: StorageSettings, on_request: OnRequest | None = None) -> Store:
    """The store ``cfg`` describes (the worker and the CLI open storage the same way)."""
    return open_store(
        endpoint=cfg.minio_endpoint,
        port=cfg.minio_port,
        bucket=cfg.minio_bucket,
        access_key=cfg.minio_access_key or "",
        secret_key=cfg.minio_secret_key or "",
        secure=cfg.minio_secure,
        storage_dir=cfg.storage_dir,
        on_request=on_request,
    )
