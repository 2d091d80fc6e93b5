"""Timestamps as they appear in the operations log, metadata and admin answers.

UTC ISO-8601 with milliseconds and ``Z``: fixed width, so they sort as text.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso_time(epoch: float | None = None) -> str:
    """``epoch`` (seconds; now when None) as ``2026-11-29T22:18:41.123Z``."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
