"""Worker fixtures: a real worker on a free port over each storage backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import RunningWorker, run_worker, settings_for
from worker.settings import StorageSettings


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    settings = settings_for(StorageSettings(storage_dir=tmp_path / "storage"))
    async with run_worker(settings) as running:
        yield running
