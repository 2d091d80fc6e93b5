"""What the live sessions of this worker hold in storage, by kind, and what it wrote.

Kinds: ``updates`` (segments) and ``snapshots`` are the CRDT state, ``log`` the operations log
(git packs are the committer's and are not counted here). A session's figures start from what
its load read (segments, snapshots) and a sized listing of its log; from then on they follow
what this worker writes and what its compactions delete. Another writer of the same session (a
brief second owner) is not seen until the next load: the gauge is this worker's view.

The flusher decides compaction from these figures (``updates`` against ``snapshots``), so the
metric and the decision can never disagree.
"""

from __future__ import annotations

from .metrics import WorkerMetrics
from .storage import CompactResult

KINDS = ("updates", "snapshots", "log")


class StoredBytes:
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._sessions: dict[str, dict[str, int]] = {}
        for kind in KINDS:
            metrics.stored_bytes.labels(kind).set(0)
            metrics.stored_bytes_written.labels(kind)

    def of(self, session_id: str) -> dict[str, int]:
        """The session's bytes by kind (zeros if it is not live here)."""
        return dict(self._sessions.get(session_id) or dict.fromkeys(KINDS, 0))

    def loaded(self, session_id: str, stored: dict[str, int]) -> None:
        """A load read these bytes (its ``updates`` and ``snapshots``); the log is unknown."""
        sizes = self._sessions.setdefault(session_id, dict.fromkeys(KINDS, 0))
        for kind in ("updates", "snapshots"):
            self._set(sizes, kind, stored.get(kind, 0))

    def listed_log(self, session_id: str, nbytes: int) -> None:
        """A sized listing of the session's log came back (after its load)."""
        sizes = self._sessions.get(session_id)
        if sizes is not None:
            self._set(sizes, "log", nbytes)

    def written(self, session_id: str, kind: str, nbytes: int) -> None:
        """``SessionStore``'s ``on_written``: every object this worker put."""
        self.metrics.stored_bytes_written.labels(kind).inc(nbytes)
        sizes = self._sessions.get(session_id)
        if sizes is not None:
            self._set(sizes, kind, sizes[kind] + nbytes)

    def compacted(self, session_id: str, result: CompactResult) -> None:
        """A compaction deleted ``merged_bytes`` (its new snapshot came through ``written``)."""
        sizes = self._sessions.get(session_id)
        if sizes is None or result.snapshot_key is None:
            return
        for kind, nbytes in result.merged_bytes.items():
            self._set(sizes, kind, max(0, sizes[kind] - nbytes))

    def forget(self, session_id: str) -> None:
        sizes = self._sessions.pop(session_id, None)
        if sizes is not None:
            for kind in KINDS:
                self.metrics.stored_bytes.labels(kind).dec(sizes[kind])

    def _set(self, sizes: dict[str, int], kind: str, value: int) -> None:
        self.metrics.stored_bytes.labels(kind).inc(value - sizes[kind])
        sizes[kind] = value
