"""Asking another worker, directly, whether it still holds a session (``/peer/sessions/{id}``).

A claim that finds another worker's live record asks that worker before anything else, because
the answer separates the three cases the takeover rule treats differently: *gone* (nothing
listens at its address: take over now), *alive* (it answers: it holds the session, or has just
let it go), and *unreachable* (no answer: it may be alive, so wait for its lease to run out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

# The holder lets an idle session go when a peer asks: its clients are all gone (the routers
# that reached it lost it, or they all left), so the asker's clients should not wait for
# SESSION_IDLE_MS. A session with clients is never released this way.
RELEASE_IDLE = "release=idle"
_REFUSED_MEMORY_S = 1.0  # a refused address is not asked again this soon


class PeerGone(Exception):
    """Nothing accepts connections at the peer's address: that process is not running."""


class PeerUnreachable(Exception):
    """No answer in time, or a network error: the peer may be alive behind a partition."""


@dataclass(frozen=True)
class PeerAnswer:
    worker: str
    incarnation: str
    lease_valid: bool
    session: str  # "live" | "released" | "absent"
    clients: int

    @classmethod
    def from_json(cls, body: Any) -> PeerAnswer:
        if not isinstance(body, dict):
            raise ValueError("peer answer is not a JSON object")
        session = body.get("session")
        if session not in ("live", "released", "absent"):
            raise ValueError(f"peer answer has no valid 'session': {session!r}")
        return cls(
            worker=str(body["worker"]),
            incarnation=str(body["incarnation"]),
            lease_valid=bool(body["leaseValid"]),
            session=str(session),
            clients=int(body.get("clients", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "incarnation": self.incarnation,
            "leaseValid": self.lease_valid,
            "session": self.session,
            "clients": self.clients,
        }


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class Peers:
    """One HTTP client for every worker-to-worker question; closed with the worker."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(trust_env=False)
        self._refused_at: dict[str, float] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ask(self, address: str, session_id: str, *, release_idle: bool) -> PeerAnswer:
        """What the worker at ``address`` says about ``session_id``; raises PeerGone or
        PeerUnreachable."""
        refused = self._refused_at.get(address)
        if refused is not None and time.monotonic() - refused < _REFUSED_MEMORY_S:
            raise PeerGone(f"{address} refused connections a moment ago")
        url = f"http://{address}/peer/sessions/{quote(session_id)}"
        if release_idle:
            url += "?" + RELEASE_IDLE
        try:
            response = await self._http.post(url, timeout=self.timeout_s)
            response.raise_for_status()
            return PeerAnswer.from_json(response.json())
        except httpx.HTTPError as exc:
            if _refused(exc):
                self._refused_at[address] = time.monotonic()
                raise PeerGone(f"{address} refused the connection") from None
            raise PeerUnreachable(f"{address}: {type(exc).__name__}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PeerUnreachable(f"{address} answered something else: {exc}") from None
