"""How long clients took to edit again after each fault healed, from their histories (pure).

Definitions, all read from the clients' histories:

- A client's **outages** are the times it could not edit:
  from each ``disconnected`` to its next ``synced`` (an editor's edits reach the server again:
  whatever it typed meanwhile goes in that sync; a JSON client has joined again);
  for a JSON client also from an ``error`` to its next ``synced`` or ``ack``, and from the
  ``send`` of an operation whose answer (``ack`` or ``error``) took longer than ``stall_s`` to
  that answer (acknowledgements wait for storage without breaking the connection).
  Overlapping outages of one client are merged.
- A fault **affects** a client when one of the client's outages overlaps the fault, from its
  ``start`` to its ``end``, or begins within ``window_s`` after the ``end`` with no other fault
  started in between (effects that show only after the heal, e.g. a frozen worker that closes
  its clients when it runs again; an outage that begins after another fault started is that
  one's).
- A fault's **recovery** is from its ``end`` (the heal) to the end of the last outage of any
  client it affects, 0 when they were all editing again by the heal. A fault that affected no
  client has no recovery time and is left out of the figures; an outage still open at the end
  of the run counts until then, and the fault is listed as ``unrecovered``.

Overlapping faults share the outages they overlap: each of them is charged until the clients
edit again, which is when the last of those faults stopped mattering.

Blind spot: an editor whose connection stays open while nothing gets through (a frozen worker
behind a live router) has no outage until the connection breaks; the histories cannot show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outage:
    start: float
    end: float | None  # None: still out at the end of the run


def outages(kind: str, events: Iterable[dict[str, Any]], stall_s: float) -> list[Outage]:
    found: list[Outage] = []
    open_at: float | None = None
    sends: dict[Any, float] = {}
    json_client = kind == "json"
    for e in sorted(events, key=lambda e: float(e["t"])):
        t, ev = float(e["t"]), e.get("ev")
        if json_client and ev == "send":
            sends[e.get("req")] = t
        if json_client and ev in ("ack", "error"):
            sent = sends.pop(e.get("req"), None)
            if sent is not None and t - sent > stall_s:
                found.append(Outage(sent, t))
        if ev == "disconnected" or (json_client and ev == "error"):
            if open_at is None:
                open_at = t
        elif open_at is not None and (ev == "synced" or (json_client and ev == "ack")):
            found.append(Outage(open_at, t))
            open_at = None
    if open_at is not None:
        found.append(Outage(open_at, None))
    return _merged(found)


def _merged(found: list[Outage]) -> list[Outage]:
    merged: list[Outage] = []
    for o in sorted(found, key=lambda o: o.start):
        if merged and (merged[-1].end is None or o.start <= merged[-1].end):
            last = merged[-1]
            end = None if last.end is None or o.end is None else max(last.end, o.end)
            merged[-1] = Outage(last.start, end)
        else:
            merged.append(o)
    return merged


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def recovery(
    faults: Iterable[dict[str, Any]],
    clients: Mapping[str, tuple[str, list[dict[str, Any]]]],
    *,
    run_end: float,
    window_s: float = 5.0,
    stall_s: float = 2.0,
) -> dict[str, Any]:
    """``clients``: name → (kind, events). Returns the figures and one row per fault."""
    out = {name: outages(kind, events, stall_s) for name, (kind, events) in clients.items()}
    faults = list(faults)
    starts = sorted(float(f["start"]) for f in faults)
    rows: list[dict[str, Any]] = []
    measured: list[float] = []
    for fault in faults:
        start = float(fault["start"])
        end = float(fault["end"]) if fault.get("end") is not None else start
        affected: dict[str, float] = {}
        unrecovered: list[str] = []
        for name, spans in out.items():
            for o in spans:
                if o.end is not None and o.end < start:
                    continue
                if o.start > end and (
                    o.start > end + window_s or any(end < s <= o.start for s in starts)
                ):
                    continue
                until = run_end if o.end is None else o.end
                affected[name] = max(affected.get(name, 0.0), max(0.0, until - end))
                if o.end is None:
                    unrecovered.append(name)
        row: dict[str, Any] = {
            "id": fault.get("id"),
            "kind": fault.get("kind"),
            "target": fault.get("target"),
            "start": start,
            "end": end,
            "affected": sorted(affected),
            "recovery_s": None,
        }
        if affected:
            slowest = max(affected, key=lambda n: affected[n])
            row["recovery_s"] = round(affected[slowest], 3)
            row["slowest"] = slowest
            measured.append(affected[slowest])
        if unrecovered:
            row["unrecovered"] = sorted(set(unrecovered))
        rows.append(row)
    figures: dict[str, Any] = {"p50": None, "p99": None, "max": None, "n": len(measured)}
    if measured:
        figures.update(
            p50=round(percentile(measured, 50), 3),
            p99=round(percentile(measured, 99), 3),
            max=round(max(measured), 3),
        )
    return {"figures": figures, "faults": rows}
