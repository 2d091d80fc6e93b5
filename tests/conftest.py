"""Shared fixtures: every async test runs on asyncio (AnyIO's pytest plugin, auto mode)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import BACKENDS, S3Server, minio_test_kwargs, start_s3_server


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One real S3 server process (SeaweedFS) for the whole run."""
    with start_s3_server() as server:
        yield server


def storage_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for a worker process on ``backend``: "local", "s3" (SeaweedFS) or "minio"
    (any S3 named by MINIO_TEST_*)."""
    if backend == "local":
        return {"STORAGE_DIR": str(tmp_path / "storage")}
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    if backend == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        kwargs = server.store_kwargs(bucket)
    else:
        kwargs = minio_test_kwargs(bucket)
    return s3_env(kwargs)


def s3_env(kwargs: dict[str, Any]) -> dict[str, str]:
    """A worker's MINIO_* environment for a store described by ``store_kwargs``."""
    return {
        "MINIO_ENDPOINT": kwargs["endpoint"],
        "MINIO_PORT": str(kwargs["port"]),
        "MINIO_BUCKET": kwargs["bucket"],
        "MINIO_ACCESS_KEY": kwargs["access_key"],
        "MINIO_SECRET_KEY": kwargs["secret_key"],
        "MINIO_SECURE": str(kwargs["secure"]).lower(),
    }


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return storage_env(request.param, tmp_path, request)
