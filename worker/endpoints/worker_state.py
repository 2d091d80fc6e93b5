"""What every endpoint of one worker app shares, set up by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.auth import Authenticator

from ..manager import SessionManager
from ..metrics import WorkerMetrics
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
    # Derived from settings, so that the lifespan that builds this state need not know of it.
    auth: Authenticator = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.settings.auth_secret)
