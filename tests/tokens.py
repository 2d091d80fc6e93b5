"""Client tokens for tests, minted with PyJWT as a client's issuer would, and refusals as seen
by a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
import websockets
from websockets.typing import Subprotocol

SECRET = "test-auth-secret-" + "0123456789abcdef" * 4  # 64+ bytes: PyJWT warns on shorter


def mint(
    sub: object = "alice",
    sessions: Any = "*",
    *,
    secret: str = SECRET,
    expires_in: float | None = 3600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A token; ``expires_in`` negative for an expired one, None for one without ``exp``."""
    payload: dict[str, Any] = {**claims}
    if sub is not None:
        payload["sub"] = sub
    if sessions is not None:
        payload["sessions"] = sessions
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    if algorithm == "none":
        return jwt.encode(payload, None, algorithm="none")
    return jwt.encode(payload, secret, algorithm=algorithm)


def bad_tokens() -> dict[str, tuple[str, str]]:
    """Tokens refused with 4401: name -> (token, a part of the close reason)."""
    return {
        "expired": (mint(expires_in=-3600), "token expired at"),
        "forged": (mint(secret="another-" + SECRET), "signature"),
        "alg none": (mint(algorithm="none"), "HS256"),
        "no sessions claim": (mint(sessions=None), "'sessions'"),
    }


@dataclass
class Closed:
    """How the server ended a connection: close frame, selected subprotocol, messages before."""

    code: int
    reason: str
    subprotocol: str | None
    messages: list[Any] = field(default_factory=list)


async def closed_with(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    send: dict[str, Any] | None = None,
    timeout: float = 5,
) -> Closed:
    """Connects, optionally sends one JSON message, and reads until the server closes."""
    offered = [Subprotocol(s) for s in subprotocols] or None
    async with websockets.connect(url, subprotocols=offered, open_timeout=timeout) as ws:
        if send is not None:
            await ws.send(json.dumps(send))
        messages: list[Any] = []
        try:
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
                messages.append(json.loads(raw) if isinstance(raw, str) else raw)
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None, "the server closed without a close frame"
            return Closed(exc.rcvd.code, exc.rcvd.reason, ws.subprotocol, messages)
