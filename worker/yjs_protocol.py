"""y-websocket framing over bytes: parse and build messages, no I/O.

A frame is ``varuint type`` followed by a type-specific body:

    0 sync       varuint step (0 = step 1, 1 = step 2, 2 = update) + varbytes payload
    1 awareness  varbytes awareness update
    2 auth       (answered by servers that use it; ignored here)
    3 query-awareness

Everything here is strict: a truncated varuint, a length pointing past the end or trailing
bytes are a ``FrameError``, so one hostile client cannot make the room mis-read its messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pycrdt import get_update

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2


class FrameError(ValueError):
    """The bytes are not a well-formed y-websocket message."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    step: int  # sync sub-type; -1 for other kinds
    payload: bytes


# lib0's unsigned LEB128, also the integers of the storage segment format (storage/codec.py).
# Most lengths, ids and clocks fit one byte: those are served from a table, with no allocation.
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def write_varuint(num: int) -> bytes:
    if 0 <= num < 0x80:
        return _ONE_BYTE[num]
    out = bytearray()
    while num > 0x7F:
        out.append(0x80 | (num & 0x7F))
        num >>= 7
    out.append(num)
    return bytes(out)


def read_varuint(buf: bytes, pos: int) -> tuple[int, int]:
    """Returns (value, new position)."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise FrameError("truncated varuint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FrameError("varuint longer than 10 bytes")


def read_varbytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_varuint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise FrameError(f"length {length} runs past the end of the message")
    return buf[pos:end], end


def read_varstring(buf: bytes, pos: int) -> tuple[str, int]:
    raw, pos = read_varbytes(buf, pos)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise FrameError("string is not UTF-8") from None


def update_author(update: bytes) -> int | None:
    """The one Yjs client whose new items an update carries: a client's own edit. None for an
    update with deletions only, one with items of several clients (a catch-up, a merged
    update), or one that does not parse (the document refuses it next)."""
    try:
        clients, pos = read_varuint(update, 0)
        if clients != 1:
            return None
        _, pos = read_varuint(update, pos)  # its number of structs
        client, _ = read_varuint(update, pos)
    except FrameError:
        return None
    return client


def has_items(update: bytes) -> bool:
    """Whether an update carries any item (not deletions only)."""
    try:
        return read_varuint(update, 0)[0] > 0
    except FrameError:
        return False


_EVERY_CLOCK = 2**53 - 1  # the largest clock a Yjs client can reach (JavaScript's safe integers)
_NOTHING_KNOWN = b"\x00"  # an empty state vector


def carries(update: bytes, client_id: int) -> bool:
    """Whether an update carries items of ``client_id``, at any clock. (Yjs cannot tell the
    clients of an update that does not start at clock 0 from its state vector; this asks it
    to drop the client's items instead, and sees whether anything went.)"""
    everything = write_varuint(1) + write_varuint(client_id) + write_varuint(_EVERY_CLOCK)
    try:
        return get_update(update, everything) != get_update(update, _NOTHING_KNOWN)
    except ValueError:
        return False  # not an update; the document refuses it next


def parse(frame: bytes) -> Frame:
    kind, pos = read_varuint(frame, 0)
    if kind == MSG_SYNC:
        step, pos = read_varuint(frame, pos)
        if step not in (SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE):
            raise FrameError(f"unknown sync step {step}")
        payload, pos = read_varbytes(frame, pos)
    elif kind == MSG_AWARENESS:
        step = -1
        payload, pos = read_varbytes(frame, pos)
    elif kind in (MSG_AUTH, MSG_QUERY_AWARENESS):
        return Frame(kind, -1, frame[pos:])
    else:
        raise FrameError(f"unknown message type {kind}")
    if pos != len(frame):
        raise FrameError("trailing bytes after the message")
    return Frame(kind, step, payload)


def sync_message(step: int, payload: bytes) -> bytes:
    return bytes((MSG_SYNC, step)) + write_varuint(len(payload)) + payload


def sync_step1(state_vector: bytes) -> bytes:
    return sync_message(SYNC_STEP1, state_vector)


def sync_step2(update: bytes) -> bytes:
    return sync_message(SYNC_STEP2, update)


def update_message(update: bytes) -> bytes:
    return sync_message(SYNC_UPDATE, update)


def awareness_message(payload: bytes) -> bytes:
    return bytes((MSG_AWARENESS,)) + write_varuint(len(payload)) + payload


# --- awareness -------------------------------------------------------------------------------
# An awareness update is ``varuint n`` then n * (varuint clientID, varuint clock, varstring JSON).
# The room keeps the latest entry per client so newcomers see who is there, and announces a
# client's departure (state ``null``) when its connection closes without saying goodbye.


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: str  # JSON text; "null" means the client left


def parse_awareness(payload: bytes) -> list[AwarenessEntry]:
    count, pos = read_varuint(payload, 0)
    if count > 10_000:
        raise FrameError("too many awareness entries")
    entries = []
    for _ in range(count):
        client_id, pos = read_varuint(payload, pos)
        clock, pos = read_varuint(payload, pos)
        state, pos = read_varstring(payload, pos)
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != len(payload):
        raise FrameError("trailing bytes after awareness entries")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    out = [write_varuint(len(entries))]
    for entry in entries:
        state = entry.state.encode("utf-8")
        out += [write_varuint(entry.client_id), write_varuint(entry.clock)]
        out += [write_varuint(len(state)), state]
    return b"".join(out)


def awareness_is_null(state: str) -> bool:
    try:
        value: Any = json.loads(state)
    except ValueError:
        return False
    return value is None
