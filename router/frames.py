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

import httptools

from contract import close_codes as codes

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeError(ValueError):
    """An HTTP head that is not a usable request/response; ``str()`` says why."""


@dataclass(frozen=True)
class Head:
    """A parsed HTTP/1.1 request or response head."""

    method: str  # requests only, as sent ("GET")
    target: str  # requests only: path and query string, as sent
    status: int  # responses only
    reason: str  # responses only: the reason phrase
    version: str  # "1.1"
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
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def first_line(self) -> str:
        """The request or status line, for logs and refusals."""
        if self.method:
            return f"{self.method} {self.target} HTTP/{self.version}"
        return f"HTTP/{self.version} {self.status} {self.reason}".rstrip()


class HeadReader:
    """One HTTP/1.1 head, parsed by httptools (llhttp, uvicorn's parser) as its bytes arrive.

    A connection's buffer is handed over after every read; only bytes not seen before are
    parsed, so a head split over many reads is still parsed once. What follows the head (a
    request body, the first WebSocket frames) is left to the caller, in its buffer.
    """

    __slots__ = ("_complete", "_headers", "_parser", "_reason", "_seen", "_url")

    def __init__(self, *, response: bool = False) -> None:
        self._parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = (
            httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)
        )
        self._url = bytearray()
        self._reason = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._complete = False
        self._seen = 0

    # httptools callbacks (values may arrive in pieces when the head is split over reads)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1").strip()))

    def on_headers_complete(self) -> None:
        self._complete = True

    def read(self, buffer: bytes | bytearray) -> Head | None:
        """The head at the start of ``buffer``, once; None while incomplete; HandshakeError if
        it is malformed or grows past MAX_HEAD_BYTES. ``buffer`` may only grow between
        calls (bytes are appended, none removed)."""
        parser = self._parser
        if parser is None:
            raise RuntimeError("this head was read already")
        fresh = buffer[self._seen :]
        self._seen = len(buffer)
        try:
            parser.feed_data(fresh)
        except httptools.HttpParserUpgrade:
            pass  # the head ended and WebSocket bytes may follow: exactly what we wait for
        except httptools.HttpParserError as exc:
            if not self._complete:  # a bad body after a good head is not ours to judge
                self._parser = None
                raise HandshakeError(f"malformed HTTP head: {exc}") from None
        if not self._complete:
            if len(buffer) > MAX_HEAD_BYTES:
                self._parser = None
                raise HandshakeError(f"HTTP head larger than {MAX_HEAD_BYTES} bytes")
            return None
        self._parser = None  # the parser holds our callbacks: no cycle left for the GC
        if isinstance(parser, httptools.HttpRequestParser):
            method, status = parser.get_method().decode("latin-1"), 0
        else:
            method, status = "", parser.get_status_code()
        return Head(
            method=method,
            target=self._url.decode("latin-1"),
            status=status,
            reason=self._reason.decode("latin-1"),
            version=parser.get_http_version(),
            headers=tuple(self._headers),
            size=buffer.find(b"\r\n\r\n") + 4,  # llhttp ends every line in CRLF
        )


def parse_head(buffer: bytes | bytearray, *, response: bool = False) -> Head | None:
    """A whole head at once (tests, one-shot reads); connections use a HeadReader."""
    return HeadReader(response=response).read(buffer)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def check_client_handshake(head: Head) -> str:
    """The client's Sec-WebSocket-Key if ``head`` is a valid RFC 6455 opening handshake."""
    if head.method != "GET" or head.version != "1.1":
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
