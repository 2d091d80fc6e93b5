"""Placement: which worker owns a session. Pure functions, no I/O.

Rendezvous (highest-random-weight) hashing: every worker gets a score per session, the highest
score owns it. Any router with the same set of workers computes the same owner with no shared
state; adding a worker moves only the sessions it now wins (about 1/(N+1) of them), and removing
one moves only the sessions it owned. Scores hash the worker's *name* (``WORKER_ID``), not its
address, so a worker that comes back under a new IP (a rescheduled StatefulSet pod) keeps its
sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b


def score(worker: str, session: str) -> int:
    digest = blake2b(f"{worker}\x00{session}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(session: str, workers: Iterable[str]) -> str | None:
    """The worker that owns ``session``, or None when there are no workers.

    Ties (astronomically rare) go to the greater name, so the answer never depends on order.
    """
    best: tuple[int, str] | None = None
    for worker in workers:
        candidate = (score(worker, session), worker)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]
