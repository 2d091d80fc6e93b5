"""The few pieces of RFC 6455 the router needs, over bytes (no I/O).

The router relays WebSocket bytes without decoding them. It reads only: the HTTP head of an
upgrade (to route on its path and check its token), the first JSON message of a connection (to
route on its ``join``), and frame *boundaries* of the worker→client stream (so that a hand-off
close frame is never spliced into the middle of a message).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

from contract import close_codes as codes

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeError(ValueError):
    """An HTTP head that is not a usable request/response; ``str()`` says why."""


@dataclass(frozen=True)
class Head:
    """A parsed HTTP/1.1 request or response head."""

    first_line: str
    headers: tuple[tuple[str, str], ...]  # names lowercased, in order, repeated names kept
    size: int  # bytes of the head, including the blank line

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def has_token(self, name: str, token: str) -> bool:
        value = self.header(name) or ""
        return token.lower() in (t.strip().lower() for t in value.split(","))

    @property
    def is_websocket_upgrade(self) -> bool:
        return self.has_token("upgrade", "websocket") and self.has_token("connection", "upgrade")

    @property
    def target(self) -> str:
        parts = self.first_line.split(" ")
        return parts[1] if len(parts) == 3 else ""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def status(self) -> int:
        parts = self.first_line.split(" ", 2)
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


def parse_head(buffer: bytes | bytearray, *, response: bool = False) -> Head | None:
    """The head at the start of ``buffer``; None if incomplete; HandshakeError if malformed.

    Hand-written rather than httptools: per connection it costs fewer instructions, and the
    router reads only a few headers of heads it passes on whole (docs/benchmarks.md, "Parsing
    heads"). A ``response`` (a worker's answer) must start with an ``HTTP/1.x NNN`` status line.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HandshakeError(f"HTTP head larger than {MAX_HEAD_BYTES} bytes")
        return None
    text = bytes(buffer[:end]).decode("latin-1")  # HTTP/1.1 heads are octets; any byte decodes
    first, *lines = text.split("\r\n")
    headers = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip():
            raise HandshakeError(f"malformed header line {line[:80]!r}")
        headers.append((key.lower(), value.strip()))
    parts = first.split(" ", 2)
    if len(parts) < 2:
        raise HandshakeError(f"malformed first line {first[:80]!r}")
    if response and not (
        parts[0].startswith("HTTP/1.") and len(parts[1]) == 3 and parts[1].isdigit()
    ):
        raise HandshakeError(f"malformed status line {first[:80]!r}")
    return Head(first, tuple(headers), end + 4)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def check_client_handshake(head: Head) -> str:
    """The client's Sec-WebSocket-Key if ``head`` is a valid RFC 6455 opening handshake."""
    if not head.first_line.startswith("GET ") or not head.first_line.endswith(" HTTP/1.1"):
        raise HandshakeError("a WebSocket handshake is 'GET <path> HTTP/1.1'")
    if head.header("sec-websocket-version") != "13":
        raise HandshakeError("Sec-WebSocket-Version must be 13")
    key = head.header("sec-websocket-key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise HandshakeError("Sec-WebSocket-Key must be 16 base64-encoded bytes") from None
    return key


def check_upgrade_response(head: Head, accept: str) -> None:
    """That a worker's 101 completes the upgrade we sent: RFC 6455 §4.1 has a client fail the
    connection otherwise, and the router is the worker's client. ``accept``: what
    ``upgrade_request`` (or ``accept_key`` of the key relayed) said to expect."""
    if not head.has_token("upgrade", "websocket"):
        raise HandshakeError(f"101 without 'Upgrade: websocket' ({head.header('upgrade')!r})")
    if not head.has_token("connection", "upgrade"):
        raise HandshakeError(f"101 without 'Connection: Upgrade' ({head.header('connection')!r})")
    if head.header("sec-websocket-accept") != accept:
        raise HandshakeError(
            f"Sec-WebSocket-Accept {head.header('sec-websocket-accept')!r} does not match"
            f" the key sent (expected {accept!r})"
        )


def offered_subprotocols(head: Head) -> list[str]:
    """Every subprotocol the client offers (the header may be repeated, or comma-separated)."""
    return [
        entry.strip()
        for name, value in head.headers
        if name == "sec-websocket-protocol"
        for entry in value.split(",")
        if entry.strip()
    ]


def switching_protocols(key: str, subprotocol: str | None = None) -> bytes:
    """The 101 answer; ``subprotocol`` (one the client offered) is selected when given."""
    selected = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{selected}\r\n"
    ).encode()


def http_error(status: int, reason: str, message: str) -> bytes:
    body = (message + "\n").encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def upgrade_request(
    target: str, host: str, forwarded: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, str]:
    """An opening handshake of our own to a worker, and the accept value to expect."""
    key = base64.b64encode(os.urandom(16)).decode()
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


def with_header(head: bytes | bytearray, name: str, value: str) -> bytes:
    """``head`` (ending in a blank line) with one more header before the blank line."""
    return bytes(head[:-2]) + f"{name}: {value}\r\n\r\n".encode()


# --- frames -----------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, mask: bool = False) -> bytes:
    """One final frame; servers send unmasked frames, clients masked ones."""
    n = len(payload)
    first = 0x80 | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _unmask(payload, key)


def close_frame(code: int, reason: str, *, mask: bool = False) -> bytes:
    data = codes.fit_reason(reason).encode()
    return frame(OP_CLOSE, struct.pack("!H", code) + data, mask=mask)


def text_frame(text: str) -> bytes:
    return frame(OP_TEXT, text.encode())


def _unmask(payload: bytes | bytearray, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    size: int  # bytes on the wire


class FrameTooLarge(ValueError):
    pass


class ProtocolError(ValueError):
    """A client frame RFC 6455 has a server refuse (close 1002); ``str()`` says which rule."""


_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))


def parse_frame(buffer: bytes | bytearray, max_payload: int) -> Frame | None:
    """The client frame at the start of ``buffer``, unmasked; None while it is incomplete.

    What RFC 6455 §5 has a server refuse is refused from the first two bytes, before any
    payload is waited for: an unmasked frame, RSV bits (no extension is negotiated), an
    unknown opcode, a fragmented control frame or one with over 125 bytes of payload.
    """
    if len(buffer) < 2:
        return None
    b0, b1 = buffer[0], buffer[1]
    opcode, length = b0 & 0x0F, b1 & 0x7F
    if not b1 & 0x80:
        raise ProtocolError("client frames must be masked")
    if b0 & 0x70:
        raise ProtocolError("RSV bits set, but no extension was negotiated")
    if opcode not in _OPCODES:
        raise ProtocolError(f"unknown opcode {opcode:#x}")
    if opcode >= OP_CLOSE and not b0 & 0x80:
        raise ProtocolError("fragmented control frame")
    if opcode >= OP_CLOSE and length > 125:
        raise ProtocolError("control frame with over 125 bytes of payload")
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
    if length > max_payload:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the {max_payload}-byte limit")
    if len(buffer) < offset + 4:
        return None
    key, offset = bytes(buffer[offset : offset + 4]), offset + 4
    end = offset + length
    if len(buffer) < end:
        return None
    return Frame(bool(b0 & 0x80), opcode, _unmask(buffer[offset:end], key), end)


class FrameCursor:
    """Follows frame boundaries of a relayed byte stream without copying payloads.

    ``feed`` costs a few operations per frame header; payload bytes are only counted.
    """

    __slots__ = ("_head", "_remaining", "closed")

    def __init__(self) -> None:
        self._head = b""
        self._remaining = 0
        self.closed = False  # a close frame went by

    @property
    def at_boundary(self) -> bool:
        return not self._remaining and not self._head

    def feed(self, data: bytes) -> None:
        n = len(data)
        if n >= 2 and not self._remaining and not self._head:
            # The common case, one whole unmasked frame per read, without the loop.
            b1 = data[1]
            length = b1 & 0x7F
            if not b1 & 0x80 and (
                (length < 126 and n == 2 + length)
                or (length == 126 and n >= 4 and n == 4 + int.from_bytes(data[2:4], "big"))
            ):
                if data[0] & 0x0F == OP_CLOSE:
                    self.closed = True
                return
        i = 0
        while i < n:
            if self._remaining:
                step = min(self._remaining, n - i)
                self._remaining -= step
                i += step
                continue
            head = self._head + data[i : i + 14] if self._head else data[i : i + 14]
            have = len(head)
            if have < 2:
                self._head, i = head, n
                return
            b1 = head[1]
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
            if have < size:
                self._head, i = head, n
                return
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            if head[0] & 0x0F == OP_CLOSE:
                self.closed = True
            i += size - len(self._head)
            self._head = b""
            self._remaining = length
