"""What every handler of the router's HTTP app reads, stored once on ``app.state``.

Handlers are plain module-level functions (router/http_app.py, router/admin_api.py) so each can
be read, and tested, on its own; they get the router's live objects from the request's app.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from contract.admin_token import sending_token

from .membership import Membership
from .metrics import RouterMetrics
from .proxy import Proxy
from .settings import RouterSettings


@dataclass(frozen=True)
class HttpState:
    settings: RouterSettings
    metrics: RouterMetrics
    membership: Membership
    proxy: Proxy
    # The headers of the router's own calls to the workers' admin APIs (``worker_auth_for``).
    worker_auth: dict[str, str]


def worker_auth_for(admin_token: str | None) -> dict[str, str]:
    """The first configured token, so that a rotation can add the new one first; none: none."""
    sending = sending_token(admin_token)
    return {"authorization": f"Bearer {sending}"} if sending else {}


def http_state(request: Request) -> HttpState:
    state: HttpState = request.app.state.router
    return state
