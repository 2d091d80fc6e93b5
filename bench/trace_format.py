"""Editing traces in the josephg/editing-traces format: read, write, replay (no I/O but files).

A sequential trace is one JSON object, plain or gzipped::

    {"startContent": "", "endContent": "...", "txns": [{"patches": [[pos, del, ins], ...]}, ...]}

Each transaction's patches apply in order: at ``pos``, delete ``del`` characters, then insert
``ins``. Positions count Unicode code points (the traces' convention; Yjs counts UTF-16 code
units, which differ only past U+FFFF, and the typist converts). Other fields (``time`` per
transaction, ``kind``, ...) are ignored here.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Patch = tuple[int, int, str]

_GZIP_MAGIC = b"\x1f\x8b"


class TraceError(ValueError):
    """The file is not a sequential editing trace, or its patches do not fit its text."""


@dataclass(frozen=True)
class Trace:
    start: str
    end: str
    txns: list[list[Patch]]

    @property
    def patches(self) -> int:
        return sum(len(t) for t in self.txns)

    def to_json(self) -> dict[str, Any]:
        return {
            "startContent": self.start,
            "endContent": self.end,
            "txns": [{"patches": [list(p) for p in txn]} for txn in self.txns],
        }


def load(path: Path) -> Trace:
    """A trace from ``path``, gzipped (recognized by its magic bytes) or plain JSON."""
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    try:
        data = json.loads(raw)
        txns = [[(int(p[0]), int(p[1]), str(p[2])) for p in txn["patches"]] for txn in data["txns"]]
        return Trace(str(data["startContent"]), str(data["endContent"]), txns)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise TraceError(f"{path}: not a sequential editing trace ({exc})") from None


def save(trace: Trace, path: Path) -> None:
    """Writes ``trace``, gzipped when the name ends in ``.gz`` (byte-for-byte reproducible:
    no file name or time in the gzip header)."""
    text = json.dumps(trace.to_json(), separators=(",", ":")).encode()
    if path.name.endswith(".gz"):
        text = gzip.compress(text, compresslevel=9, mtime=0)
    path.write_bytes(text)


def replay(trace: Trace) -> str:
    """The text after every patch, applied in order to ``startContent``."""
    doc = list(trace.start)
    for txn in trace.txns:
        for pos, delete, insert in txn:
            if pos < 0 or delete < 0 or pos + delete > len(doc):
                raise TraceError(f"patch {(pos, delete, insert)!r} outside a text of {len(doc)}")
            doc[pos : pos + delete] = insert
    return "".join(doc)
