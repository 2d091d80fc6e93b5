"""What one worker asks another directly: ``POST /peer/sessions/{id}[?release=idle]``.

A worker about to claim a session whose owner record names this worker asks here first
(``worker.peers``, the takeover rule in ``worker.ownership``). The answer says who is
listening (worker id and process incarnation), whether this worker's lease is valid, and whether
it holds the session; with ``release=idle`` a session held here with no client is flushed and
let go at once. It is not behind ``ADMIN_TOKEN``: peers must reach it whatever the
configuration, and it reveals no content and can only make an idle session leave.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contract.ids import validate_session_id

from ..peers import RELEASE_IDLE
from .worker_state import state_of


async def peer_session(request: Request) -> Response:
    state = state_of(request)
    try:
        session_id = validate_session_id(request.path_params["session"])
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    release_idle = request.url.query == RELEASE_IDLE
    answer = await state.manager.peer_answer(session_id, release_idle=release_idle)
    return JSONResponse(answer.to_json())


peer_routes = [Route("/peer/sessions/{session}", peer_session, methods=["POST"])]
