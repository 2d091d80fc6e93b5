"""What every endpoint of one worker app shares, set up by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

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
    started: float  # the app's start (monotonic), for the uptime in the status
    ready: bool = False
    # Derived from settings, so that the lifespan that builds this state need not know of it.
    auth: Authenticator = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.settings.auth_secret)

    def connections_by_protocol(self) -> dict[str, int]:
        return {
            p: int(self.metrics.value("collab_connections_active", protocol=p))
            for p in ("yjs", "json")
        }

    def load_and_durability(self) -> dict[str, object]:
        """The part of ``/readyz`` and ``/admin/status`` that must never disagree.

        Routers read the first, operators the second; built once so that both report the same
        counts and the same durability lag, and refresh the lag gauges the same way.
        """
        manager = self.manager
        unflushed, age = manager.update_lag_metrics()
        return {
            "sessions": len(manager.sessions),
            "connections": sum(self.connections_by_protocol().values()),
            # Storage trouble is reported, not turned into 503: every worker shares the same
            # storage, so moving sessions elsewhere would not help, and this worker keeps
            # serving and holding the edits until storage is back.
            "storage": "ok" if manager.health.ok else "unavailable",
            "storageError": manager.health.error,
            "unflushedBytes": unflushed,
            "unflushedAgeSeconds": round(age, 3),
        }


def state_of(request: Request) -> WorkerState:
    """The worker state of the app serving ``request`` (set by the app's lifespan)."""
    state: WorkerState = request.app.state.worker
    return state
