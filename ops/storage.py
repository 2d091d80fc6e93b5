"""Storage for the commands that work on it directly (import, export, log): the same store a
worker would open from the same environment (MINIO_* or STORAGE_DIR)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from worker.settings import StorageSettings
from worker.storage import SessionStore, store_for


@asynccontextmanager
async def session_store(env: Mapping[str, str] | None = None) -> AsyncIterator[SessionStore]:
    store = store_for(StorageSettings.from_env(os.environ if env is None else env))
    try:
        yield SessionStore(store, "collab-cli")
    finally:
        await store.aclose()
