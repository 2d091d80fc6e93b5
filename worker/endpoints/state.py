"""What every endpoint of one worker app shares, set up by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metrics import WorkerMetrics
from ..sessions import SessionManager
from ..settings import Settings
from ..storage import SessionStore


@dataclass
class WorkerState:
    settings: Settings
    metrics: WorkerMetrics
    store: SessionStore
    manager: SessionManager
    ready: bool = False
    stopping: bool = field(default=False)
