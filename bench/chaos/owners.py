"""How many workers served one session at once, from the orchestrator's samples (pure).

``owners.jsonl`` holds one line per sample of one worker: ``{"t", "worker", "ok", "live"}``, the
sessions that worker listed as live at ``t`` (``ok`` false: it did not answer). Sampling is not
atomic across workers, so a hand-off (the old owner flushes and releases, the new one claims)
can show both for a moment. The rule:

- A worker's **listing interval** for a session covers an unbroken run of its answered samples
  that list the session. A sample that does not list it, or that the worker did not answer,
  ends the run: nothing is assumed about unobserved times. A sample's answer describes the
  worker at some instant between the request's ``sent`` and ``t`` (just ``t`` when a sample
  has no ``sent``), so the interval is only what is sure: from the first sample's ``t`` to the
  last sample's ``sent``, empty when those cross. It is never longer than the truth, and a true
  overlap of length D shows as at least D - 2p - 2r (p: the sampling period, r: an answer's
  round trip).
- An **episode** of k live owners is a stretch of time during which at least k distinct
  workers' listing intervals cover every instant.
- ``max_live_owners`` is the largest k with an episode longer than ``owner_bound_s`` (and 1
  when any session was listed at all, 0 when none was): shorter episodes are hand-offs, counted
  apart as ``short_overlaps``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Interval:
    worker: str
    start: float
    end: float


@dataclass(frozen=True)
class Episode:
    session: str
    owners: int  # at least this many at every instant
    start: float
    end: float
    workers: tuple[str, ...]  # every worker listing the session during the episode

    @property
    def duration(self) -> float:
        return self.end - self.start


def listing_intervals(samples: Iterable[dict[str, Any]]) -> dict[str, list[Interval]]:
    """session → the workers' listing intervals."""
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        by_worker[str(sample["worker"])].append(sample)
    intervals: dict[str, list[Interval]] = defaultdict(list)
    for worker, own in by_worker.items():
        own.sort(key=lambda s: float(s["t"]))
        # session → (the first listing's answer time, the last listing's request time)
        open_runs: dict[str, tuple[float, float]] = {}
        for sample in own:
            t = float(sample["t"])
            sent = float(sample.get("sent", t))
            live = set(sample.get("live") or []) if sample.get("ok") else set()
            for session in list(open_runs):
                if session not in live:
                    first, last = open_runs.pop(session)
                    if last >= first:
                        intervals[session].append(Interval(worker, first, last))
            for session in live:
                first, _ = open_runs.get(session, (t, sent))
                open_runs[session] = (first, sent)
        for session, (first, last) in open_runs.items():
            if last >= first:
                intervals[session].append(Interval(worker, first, last))
    return dict(intervals)


def episodes(session: str, intervals: list[Interval], owners: int) -> list[Episode]:
    """Maximal stretches with at least ``owners`` distinct workers listing the session."""
    points = sorted({i.start for i in intervals} | {i.end for i in intervals})
    found: list[Episode] = []
    current: tuple[float, set[str]] | None = None
    end = 0.0
    for a, b in itertools.pairwise(points):
        covering = {i.worker for i in intervals if i.start <= a and i.end >= b}
        if len(covering) >= owners:
            if current is None:
                current = (a, set(covering))
            else:
                current[1].update(covering)
            end = b
            continue
        if current is not None:
            found.append(Episode(session, owners, current[0], end, tuple(sorted(current[1]))))
            current = None
    if current is not None:
        found.append(Episode(session, owners, current[0], end, tuple(sorted(current[1]))))
    return found


def live_owners(samples: Iterable[dict[str, Any]], owner_bound_s: float) -> dict[str, Any]:
    """``max_live_owners``, the episodes past the bound, and how many shorter ones were seen."""
    intervals = listing_intervals(samples)
    best = 1 if intervals else 0
    long: list[Episode] = []
    short = 0
    for session, own in sorted(intervals.items()):
        workers = {i.worker for i in own}
        for k in range(2, len(workers) + 1):
            found = episodes(session, own, k)
            if not found:
                break
            for episode in found:
                if episode.duration > owner_bound_s:
                    long.append(episode)
                    best = max(best, k)
                elif k == 2:
                    short += 1
    return {
        "max_live_owners": best,
        "episodes": [
            {
                "session": e.session,
                "owners": e.owners,
                "workers": list(e.workers),
                "start": e.start,
                "end": e.end,
                "duration_s": round(e.duration, 3),
            }
            for e in long
        ],
        "short_overlaps": short,
    }
