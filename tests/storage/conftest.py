"""Fixtures for the storage contract: a fresh store per test, on every backend.

``store`` is parametrized over every backend we can run here: the local directory store, a moto
S3 server (the session-wide ``s3_server`` of tests/conftest.py, through ``MinioStore``), and a
real MinIO when ``MINIO_TEST_ENDPOINT`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.s3server import S3Server
from worker.storage import LocalStore, MinioStore, Store

BACKENDS = [
    pytest.param("local"),
    pytest.param("s3", marks=pytest.mark.s3),
    *(
        [pytest.param("minio", marks=pytest.mark.s3)]
        if os.environ.get("MINIO_TEST_ENDPOINT")
        else []
    ),
]


def fresh_bucket() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


def minio_from_env(bucket: str) -> MinioStore:
    """A store on the real MinIO named by MINIO_TEST_*; each test gets its own bucket."""
    return MinioStore(
        os.environ["MINIO_TEST_ENDPOINT"],
        int(os.environ.get("MINIO_TEST_PORT", "9000")),
        f"{os.environ.get('MINIO_TEST_BUCKET', 'collab-test')}-{bucket}"[:63],
        os.environ.get("MINIO_TEST_ACCESS_KEY", ""),
        os.environ.get("MINIO_TEST_SECRET_KEY", ""),
        os.environ.get("MINIO_TEST_SECURE", "false").lower() in ("1", "true", "yes"),
    )


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
