"""The WebSocket frames the router reads or writes itself, over bytes (no I/O).

After routing, the router relays bytes without decoding them; it only follows frame
*boundaries* of the worker→client stream (``FrameCursor``), so that a close frame of its own
(hand-off, dead worker) is never spliced into the middle of a message. Before routing a JSON
connection it reads the client's frames up to the ``join`` (``parse_client_frame``) and
answers pings and errors itself. Frames are parsed and built with websockets' sans-I/O frame
codec, the one the worker uses.
"""

from __future__ import annotations

from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from contract import close_codes as codes

OP_CONT, OP_TEXT, OP_BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
OP_CLOSE, OP_PING, OP_PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


class FrameTooLarge(ValueError):
    pass


class ProtocolError(ValueError):
    """A client frame RFC 6455 has a server refuse (close 1002); ``str()`` says which rule."""


def frame(opcode: int, payload: bytes, *, mask: bool = False, fin: bool = True) -> bytes:
    """One frame; servers send unmasked frames, clients masked ones."""
    return Frame(Opcode(opcode), payload, fin).serialize(mask=mask)


def close_frame(code: int, reason: str, *, mask: bool = False) -> bytes:
    return frame(OP_CLOSE, Close(code, codes.fit_reason(reason)).serialize(), mask=mask)


def text_frame(text: str) -> bytes:
    return frame(OP_TEXT, text.encode())


def parse_client_frame(buffer: bytes | bytearray, max_payload: int) -> tuple[Frame, int] | None:
    """The client frame at the start of ``buffer``, unmasked, and its size on the wire; None
    while it is incomplete. A payload over ``max_payload`` is refused from the frame's header
    (FrameTooLarge); what RFC 6455 §5 has a server refuse raises ProtocolError."""
    reader = StreamReader()
    reader.feed_data(bytes(buffer))
    parser = Frame.parse(reader.read_exact, mask=True, max_size=max_payload)
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
        return parsed, len(buffer) - len(reader.buffer)
    except PayloadTooBig:
        raise FrameTooLarge(f"message exceeds the {max_payload}-byte limit") from None
    except WsProtocolError as exc:
        raise ProtocolError(str(exc)) from None
    return None


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
