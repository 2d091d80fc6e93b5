"""Shared fixtures: every async test runs on asyncio (AnyIO's pytest plugin, auto mode)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import S3Server, start_s3_server


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One real S3 server process (moto) for the whole run."""
    with start_s3_server() as server:
        yield server


def storage_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for a worker process on ``backend``: "local", "s3" (moto) or "minio"."""
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    if backend == "local":
        return {"STORAGE_DIR": str(tmp_path / "storage")}
    if backend == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return {
            "MINIO_ENDPOINT": server.host,
            "MINIO_PORT": str(server.port),
            "MINIO_BUCKET": bucket,
            "MINIO_ACCESS_KEY": server.access_key,
            "MINIO_SECRET_KEY": server.secret_key,
        }
    return {
        "MINIO_ENDPOINT": os.environ["MINIO_TEST_ENDPOINT"],
        "MINIO_PORT": os.environ.get("MINIO_TEST_PORT", "9000"),
        "MINIO_BUCKET": f"{os.environ.get('MINIO_TEST_BUCKET', 'collab-test')}-{bucket}"[:63],
        "MINIO_ACCESS_KEY": os.environ.get("MINIO_TEST_ACCESS_KEY", ""),
        "MINIO_SECRET_KEY": os.environ.get("MINIO_TEST_SECRET_KEY", ""),
        "MINIO_SECURE": os.environ.get("MINIO_TEST_SECURE", "false"),
    }


STORAGE_BACKENDS = [
    pytest.param("local"),
    pytest.param("s3", marks=pytest.mark.s3),
    *(
        [pytest.param("minio", marks=pytest.mark.s3)]
        if os.environ.get("MINIO_TEST_ENDPOINT")
        else []
    ),
]


@pytest.fixture(params=STORAGE_BACKENDS)
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return storage_env(request.param, tmp_path, request)
