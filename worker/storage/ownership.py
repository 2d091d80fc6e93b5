"""Who owns what, in the storage the pool already has: two kinds of small mutable objects.

Layout (outside ``sessions/``, so exports, listings and loads never see coordination state)::

    ownership/workers/{workerId}.json    a worker's lease: renewed every LEASE_TTL_MS / 5
    ownership/sessions/{sessionId}.json  a session's owner: written when it is claimed or released

Both change only by compare-and-swap (``Store.put_if``), so two workers that race for one session
see exactly one winner, and a lease that two processes share (a misconfigured ``WORKER_ID``)
shows as a failed swap instead of silently alternating. In steady state only leases are
written: one request per worker per renewal, whatever the number of live sessions. The rules
that decide *when* a claim may replace another worker's live record are ``worker.ownership``'s;
this module only reads and writes the records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from contract.ids import validate_name, validate_session_id

from .base import CorruptObject, Store

SESSIONS = "ownership/sessions/"
WORKERS = "ownership/workers/"


@dataclass(frozen=True)
class OwnerRecord:
    """The one worker allowed to serve a session, and since when.

    ``epoch`` grows by one with every claim: a fencing value that names one reign of one owner,
    written into the git ref by commits so a deposed owner cannot move history (``git_branch``).
    ``released`` means the owner let it go (unload, hand-off): anyone may claim it at once.
    """

    worker: str
    incarnation: str
    epoch: int
    since: str
    address: str
    released: bool = False

    def release(self) -> OwnerRecord:
        return replace(self, released=True)

    def describe(self) -> dict[str, Any]:
        return {
            "holder": self.worker,
            "incarnation": self.incarnation,
            "epoch": self.epoch,
            "since": self.since,
            "address": self.address,
            "released": self.released,
        }


@dataclass(frozen=True)
class LeaseRecord:
    """A worker process's heartbeat. ``renewals`` changes with every renewal, so an observer
    that reads the same record twice, ``ttl_ms`` apart on its own clock, knows the holder did
    not renew in that time (no clocks are compared between machines). ``stopped`` is written
    by a clean exit: the worker holds nothing any more."""

    worker: str
    incarnation: str
    address: str
    renewals: int
    renewed_at: str  # wall clock, for people only
    ttl_ms: int
    stopped: bool = False


def _decode(data: bytes, key: str, fields: tuple[str, ...]) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise CorruptObject(key, f"not JSON: {exc}") from None
    if not isinstance(obj, dict) or any(f not in obj for f in fields):
        raise CorruptObject(key, f"needs the fields {', '.join(fields)}")
    return obj


def _encode(record: OwnerRecord | LeaseRecord) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":")).encode()


def _owner_from(data: bytes, key: str) -> OwnerRecord:
    obj = _decode(data, key, ("worker", "incarnation", "epoch", "since", "address"))
    try:
        return OwnerRecord(
            worker=str(obj["worker"]),
            incarnation=str(obj["incarnation"]),
            epoch=int(obj["epoch"]),
            since=str(obj["since"]),
            address=str(obj["address"]),
            released=bool(obj.get("released", False)),
        )
    except (TypeError, ValueError) as exc:
        raise CorruptObject(key, f"bad owner record: {exc}") from None


def _lease_from(data: bytes, key: str) -> LeaseRecord:
    obj = _decode(data, key, ("worker", "incarnation", "address", "renewals", "ttl_ms"))
    try:
        return LeaseRecord(
            worker=str(obj["worker"]),
            incarnation=str(obj["incarnation"]),
            address=str(obj["address"]),
            renewals=int(obj["renewals"]),
            renewed_at=str(obj.get("renewed_at", "")),
            ttl_ms=int(obj["ttl_ms"]),
            stopped=bool(obj.get("stopped", False)),
        )
    except (TypeError, ValueError) as exc:
        raise CorruptObject(key, f"bad lease record: {exc}") from None


class OwnershipStore:
    """Reads and compare-and-swaps ownership records; versions are the Store's opaque ones."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def read_owner(self, session_id: str) -> tuple[OwnerRecord, str] | None:
        key = SESSIONS + validate_session_id(session_id) + ".json"
        found = await self.store.get_versioned(key)
        return None if found is None else (_owner_from(found[0], key), found[1])

    async def write_owner(
        self, session_id: str, record: OwnerRecord, version: str | None
    ) -> str | None:
        """The new version, or None when the record moved since ``version`` (nothing written)."""
        key = SESSIONS + validate_session_id(session_id) + ".json"
        return await self.store.put_if(key, _encode(record), version)

    async def read_lease(self, worker_id: str) -> tuple[LeaseRecord, str] | None:
        key = WORKERS + validate_name(worker_id, "worker id") + ".json"
        found = await self.store.get_versioned(key)
        return None if found is None else (_lease_from(found[0], key), found[1])

    async def write_lease(
        self, worker_id: str, record: LeaseRecord, version: str | None
    ) -> str | None:
        key = WORKERS + validate_name(worker_id, "worker id") + ".json"
        return await self.store.put_if(key, _encode(record), version)
