"""The bytes the load generator speaks: Yjs updates and y-websocket / Hocuspocus framing. No I/O.

A writer's updates are encoded by hand rather than through a pycrdt Doc so that making one costs a
few bytes of concatenation (the load generator shares two cores with the server it measures).
Each update appends one string item to the `Y.Text` named `content`, chained to the writer's
previous item, exactly as a Yjs client typing at the end of its own text would encode it; the
first one carries the root type's name. `check_updates` replays them through pycrdt.

The inserted string is a marker, `<ts|writer.seq>` in fixed-width hex, which Yjs stores verbatim
in the update (ASCII), so receivers find it in the raw frame, even inside Hocuspocus's merged
updates, without decoding anything: `ts` is the writer's `time.monotonic_ns()` (one clock for
every process on the machine), which makes fan-out latency one subtraction.

Framing: y-websocket messages are `varuint type` + payload (0 sync: 0 step1 / 1 step2 / 2 update;
1 awareness). Hocuspocus prefixes every message, both ways, with the document name as a
varstring, requires an auth message (type 2, subtype 0 token, varstring token, varstring provider
version) before anything else is processed, answers every update with SyncStatus (type 8), and
echoes updates to their sender as y-websocket servers do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from worker.yjs_protocol import read_varuint, write_varuint

MARKER = re.compile(rb"<([0-9a-f]{16})\|([0-9a-f]{8})\.([0-9a-f]{8})>")
MARKER_LEN = 36

SYNC, AWARENESS, AUTH = 0, 1, 2
STEP1, STEP2, UPDATE = 0, 1, 2
HOCUSPOCUS_SYNC_REPLY, HOCUSPOCUS_SYNC_STATUS = 4, 8
AUTH_TOKEN, AUTH_PERMISSION_DENIED, AUTH_AUTHENTICATED = 0, 1, 2
EMPTY_STATE_VECTOR = b"\x00"
EMPTY_UPDATE = b"\x00\x00"
TEXT_NAME = "content"


varuint = write_varuint  # the worker's own framing helper: one implementation


def varbytes(data: bytes) -> bytes:
    return varuint(len(data)) + data


def varstring(text: str) -> bytes:
    return varbytes(text.encode())


def marker(ts_ns: int, writer: int, seq: int) -> bytes:
    return b"<%016x|%08x.%08x>" % (ts_ns, writer & 0xFFFFFFFF, seq & 0xFFFFFFFF)


@dataclass
class TextAppender:
    """One Yjs client appending to its own run of `content`: each call is one update (v1)."""

    client_id: int
    clock: int = 0

    def update(self, text: bytes) -> bytes:
        """The update that appends ASCII `text`."""
        head = b"\x01\x01" + varuint(self.client_id) + varuint(self.clock)
        if self.clock == 0:
            # info 0x04: ContentString, no origins -> parent is the root type, by name
            item = b"\x04\x01" + varstring(TEXT_NAME)
        else:
            # info 0x84: ContentString with a left origin, our previous character
            item = b"\x84" + varuint(self.client_id) + varuint(self.clock - 1)
        self.clock += len(text)
        return head + item + varbytes(text) + b"\x00"  # + empty delete set


class Framing(Enum):
    YWS = "yws"
    HOCUSPOCUS = "hocuspocus"


class Kind(Enum):
    UPDATE = 1
    STEP1 = 2
    STEP2 = 3
    AUTHENTICATED = 4
    DENIED = 5
    OTHER = 6


@dataclass
class Codec:
    """Outgoing messages and a classifier for incoming ones, for one document."""

    framing: Framing
    document: str
    _prefix: bytes = field(init=False)

    def __post_init__(self) -> None:
        self._prefix = varstring(self.document) if self.framing is Framing.HOCUSPOCUS else b""

    def hello(self) -> list[bytes]:
        """What a provider sends on open: (auth and) sync step 1 with an empty state vector."""
        step1 = self._prefix + bytes([SYNC, STEP1]) + varbytes(EMPTY_STATE_VECTOR)
        if self.framing is Framing.YWS:
            return [step1]
        auth = self._prefix + bytes([AUTH, AUTH_TOKEN]) + varstring("") + varstring("loadgen")
        return [auth, step1]

    def step2_empty(self) -> bytes:
        """The reply to the server's step 1: we hold nothing it lacks."""
        return self._prefix + bytes([SYNC, STEP2]) + varbytes(EMPTY_UPDATE)

    def update(self, update: bytes) -> bytes:
        return self._prefix + bytes([SYNC, UPDATE]) + varbytes(update)

    def awareness(self, client_id: int, clock: int) -> bytes:
        """A renewal of our (empty) awareness state, as y-websocket sends every 15 s."""
        body = varuint(1) + varuint(client_id) + varuint(clock) + varstring("{}")
        return self._prefix + bytes([AWARENESS]) + varbytes(body)

    def classify(self, message: bytes) -> Kind:
        pos = 0
        if self.framing is Framing.HOCUSPOCUS:
            length, pos = read_varuint(message, 0)
            pos += length
        if len(message) < pos + 2:
            return Kind.OTHER
        kind, sub = message[pos], message[pos + 1]
        if kind == SYNC or (kind == HOCUSPOCUS_SYNC_REPLY and self.framing is Framing.HOCUSPOCUS):
            return (Kind.STEP1, Kind.STEP2, Kind.UPDATE)[sub] if sub <= UPDATE else Kind.OTHER
        if kind == AUTH and self.framing is Framing.HOCUSPOCUS:
            if sub == AUTH_AUTHENTICATED:
                return Kind.AUTHENTICATED
            if sub == AUTH_PERMISSION_DENIED:
                return Kind.DENIED
        return Kind.OTHER


def check_updates(updates: list[bytes], expected: str) -> None:
    """Replay hand-made updates through pycrdt; raise if the text is not `expected`."""
    from pycrdt import Doc, Text  # only for this self-check

    doc: Doc[Text] = Doc()
    text = doc.get(TEXT_NAME, type=Text)
    for update in updates:
        doc.apply_update(update)
    if str(text) != expected:
        raise AssertionError(f"hand-encoded updates decode to {str(text)!r}, not {expected!r}")
