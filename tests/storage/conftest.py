"""Fixtures for the storage contract: a fresh store per test, on every backend.

``store`` is parametrized over every backend we can run here: the local directory store, a
SeaweedFS S3 server (the session-wide ``s3_server`` of tests/conftest.py, through
``MinioStore``), and a real MinIO (or any S3) when ``MINIO_TEST_ENDPOINT`` is set.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.s3server import BACKENDS, S3Server, minio_test_kwargs
from worker.storage import LocalStore, MinioStore, Store


def fresh_bucket() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


def minio_from_env(bucket: str) -> MinioStore:
    """A store on the real MinIO named by MINIO_TEST_*; each test gets its own bucket."""
    return MinioStore(**minio_test_kwargs(bucket))


async def make_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if backend == "local":
        return LocalStore(tmp_path / "store")
    if backend == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return MinioStore(**server.store_kwargs(fresh_bucket()))
    return minio_from_env(fresh_bucket())


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = await make_store(request.param, tmp_path, request)
    try:
        yield s
    finally:
        await s.aclose()
