"""Shared fixtures: every async test runs on asyncio (AnyIO's pytest plugin, auto mode)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
