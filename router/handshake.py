"""The RFC 6455 opening handshake as the router sees it, over bytes (no I/O).

The router reads a client's upgrade (to route on its path and check its token), answers it
itself on the JSON protocol (it must read the join before it can route), passes it on to a
worker on the Yjs protocol, and checks the worker's answer as a client must (RFC 6455 §4.1).
Heads are parsed by the shared edge (``contract.edge.heads``: websockets' HTTP/1.1 parser, the
size limit, one value for a header that must have one); the few heads the router writes
itself are plain strings (docs/benchmarks.md, "One codec for heads").
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from websockets.http11 import Request, Response
from websockets.utils import accept_key, generate_key

from contract.edge.heads import (
    INTERNAL_PREFIX,
    HeadError,
    head_end,
    parse_request,
    parse_response,
    single,
)

__all__ = [
    "Answer",
    "HandshakeError",
    "Upgrade",
    "accept_key",
    "check_upgrade_response",
    "read_answer",
    "read_upgrade",
    "switching_protocols",
    "upgrade_request",
]

_INTERNAL = INTERNAL_PREFIX.encode()
# Headers the router reads or passes on by name: each must come once (else 400).
_SINGLE = ("Host", "Origin", "User-Agent", "Sec-WebSocket-Version", "Sec-WebSocket-Key")


class HandshakeError(HeadError):
    """A head that is not a usable WebSocket handshake; ``str()`` says why (400)."""


@dataclass(frozen=True)
class Upgrade:
    """A client's valid upgrade request."""

    request: Request
    key: str  # Sec-WebSocket-Key
    size: int  # bytes of the head, through the blank line

    @property
    def target(self) -> str:
        return self.request.path

    @property
    def path(self) -> str:
        """The target without its query, as sent (not percent-decoded)."""
        return self.request.path.partition("?")[0]

    @property
    def query(self) -> str:
        return self.request.path.partition("?")[2]

    def header(self, name: str) -> str | None:
        """One of the headers checked to be single (``_SINGLE``)."""
        return single(self.request.headers, name)

    @property
    def subprotocols(self) -> list[str]:
        """Every subprotocol the client offers (the header may be repeated, or a list)."""
        return [
            entry.strip()
            for value in self.request.headers.get_all("Sec-WebSocket-Protocol")
            for entry in value.split(",")
            if entry.strip()
        ]

    def forwarded(self, head: bytes, extra: tuple[tuple[str, str], ...]) -> bytes:
        """``head`` (this request's, as the client sent it) as the router passes it on: the
        client's own ``X-Collab-*`` lines removed (only a router speaks for a router),
        ``extra`` headers added. Built from the bytes, not re-serialized: cheaper per
        connection, and the worker sees the client's head as it was."""
        lines = head[: self.size - 4].split(b"\r\n")
        kept = [lines[0], *(line for line in lines[1:] if not _is_internal(line))]
        added = [f"{name}: {value}".encode() for name, value in extra]
        return b"\r\n".join([*kept, *added]) + b"\r\n\r\n"


def _is_internal(line: bytes) -> bool:
    return line[: len(_INTERNAL)].lower() == _INTERNAL


def read_upgrade(head: bytes) -> Upgrade:
    """The client's upgrade in ``head`` (a whole head); HeadError (400/431) when unusable."""
    request = parse_request(head)
    if request.method != "GET" or request.protocol != "HTTP/1.1":
        raise HandshakeError("a WebSocket handshake is 'GET <path> HTTP/1.1'")
    for name in _SINGLE:
        single(request.headers, name)  # RepeatedHeader: 400
    if single(request.headers, "Sec-WebSocket-Version") != "13":
        raise HandshakeError("Sec-WebSocket-Version must be 13")
    key = single(request.headers, "Sec-WebSocket-Key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise HandshakeError("Sec-WebSocket-Key must be 16 base64-encoded bytes") from None
    return Upgrade(request, key, len(head))


def switching_protocols(key: str, subprotocol: str | None = None) -> bytes:
    """The 101 answer; ``subprotocol`` (one the client offered) is selected when given."""
    selected = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{selected}\r\n"
    ).encode()


def upgrade_request(
    target: str, host: str, forwarded: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, str]:
    """An opening handshake of our own to a worker, and the accept value to expect."""
    key = generate_key()
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in forwarded),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept_key(key)


@dataclass(frozen=True)
class Answer:
    """A worker's answer to an upgrade: its status line and headers."""

    response: Response
    size: int  # bytes of the head; what follows are the worker's first frames

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def first_line(self) -> str:
        return f"HTTP/1.1 {self.response.status_code} {self.response.reason_phrase}"

    def header(self, name: str) -> str | None:
        """The header's value; None when absent, or when repeated (then it says nothing)."""
        values = self.response.headers.get_all(name)
        return values[0] if len(values) == 1 else None


def read_answer(buffer: bytes | bytearray) -> Answer | None:
    """The worker's answer at the start of ``buffer``; None while incomplete."""
    size = head_end(buffer)
    if size is None:
        return None
    return Answer(parse_response(bytes(buffer[:size])), size)


def _has_token(answer: Answer, name: str, token: str) -> bool:
    value = answer.header(name) or ""
    return token in (t.strip().lower() for t in value.split(","))


def check_upgrade_response(answer: Answer, accept: str) -> None:
    """That a worker's 101 completes the upgrade we sent: RFC 6455 §4.1 has a client fail the
    connection otherwise, and the router is the worker's client. ``accept``: what
    ``upgrade_request`` (or ``accept_key`` of the key relayed) said to expect."""
    if not _has_token(answer, "upgrade", "websocket"):
        raise HandshakeError(f"101 without 'Upgrade: websocket' ({answer.header('upgrade')!r})")
    if not _has_token(answer, "connection", "upgrade"):
        raise HandshakeError(f"101 without 'Connection: Upgrade' ({answer.header('connection')!r})")
    if answer.header("sec-websocket-accept") != accept:
        raise HandshakeError(
            f"Sec-WebSocket-Accept {answer.header('sec-websocket-accept')!r} does not match"
            f" the key sent (expected {accept!r})"
        )
