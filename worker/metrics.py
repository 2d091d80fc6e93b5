"""Every worker metric, declared once. Names are part of the contract (DESIGN §10).

Each app gets its own registry so several workers can live in one test process.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge(
            "collab_sessions_active", "Live sessions on this worker", registry=r
        )
        self.connections_active = Gauge(
            "collab_connections_active", "Open client connections", ["protocol"], registry=r
        )
        self.documents_loaded = Gauge(
            "collab_documents_loaded", "Documents held in memory", registry=r
        )
        self.updates_received = Counter(
            "collab_updates_received_total", "Yjs updates received from clients", registry=r
        )
        self.update_bytes = Counter(
            "collab_update_bytes_total", "Bytes of Yjs updates received from clients", registry=r
        )
        self.messages_sent = Counter(
            "collab_messages_sent_total", "Messages queued to clients (fan-out)", registry=r
        )
        self.flush_seconds = Histogram(
            "collab_flush_seconds",
            "Time to write one session's pending updates",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.flush_errors = Counter(
            "collab_flush_errors_total", "Failed flush attempts", registry=r
        )
        self.storage_requests = Counter(
            "collab_storage_requests_total", "Storage requests", ["op", "outcome"], registry=r
        )
        self.session_load_seconds = Histogram(
            "collab_session_load_seconds",
            "Time to load a session from storage",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commits = Counter("collab_commits_total", "Auto-commits", ["outcome"], registry=r)
        self.commit_seconds = Histogram(
            "collab_commit_seconds",
            "Time to commit a session to its git history (objects and ref)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.draining = Gauge("collab_worker_draining", "1 while the worker drains", registry=r)
        self.event_loop_lag = Gauge(
            "collab_event_loop_lag_seconds", "How late the event loop ran a timer", registry=r
        )
        self.unflushed_bytes = Gauge(
            "collab_unflushed_bytes", "Bytes of updates held only in memory", registry=r
        )
        self.unflushed_age = Gauge(
            "collab_unflushed_age_seconds",
            "Age of the oldest update not yet in storage",
            registry=r,
        )
        self.slow_clients_dropped = Counter(
            "collab_slow_clients_disconnected_total",
            "Clients disconnected because their send buffer overflowed",
            registry=r,
        )
        self.client_id_conflicts = Counter(
            "collab_client_id_conflicts_total",
            "Connections refused because another live connection writes the document with"
            " the same Yjs client ID",
            registry=r,
        )
        self.limit_refusals = Counter(
            "collab_limit_refusals_total",
            "Updates refused by a limit: MAX_UPDATE_BYTES (update) or MAX_DOC_BYTES (document)",
            ["limit"],
            registry=r,
        )
        self.session_doc_bytes = Gauge(
            "collab_session_doc_bytes",
            "Bytes of the live sessions' documents, summed (each session's running estimate)",
            registry=r,
        )
        self.session_doc_bytes_max = Gauge(
            "collab_session_doc_bytes_max",
            "Bytes of the documents of the largest live session (MAX_DOC_BYTES applies to it)",
            registry=r,
        )
        self.protocol_errors = Counter(
            "collab_protocol_errors_total", "Rejected client messages", ["reason"], registry=r
        )
        self.takeovers = Counter(
            "collab_ownership_takeovers_total",
            "Sessions this worker took over from another owner, by why that owner was not serving",
            ["reason"],
            registry=r,
        )
        self.ownership_refused = Counter(
            "collab_ownership_refused_total",
            "Connections not served here because another live worker owns their session",
            registry=r,
        )
        self.ack_seconds = Histogram(
            "collab_ack_seconds",
            "A write received to its positive answer (sent once the write is in storage)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stored_bytes = Gauge(
            "collab_stored_bytes",
            "Bytes the live sessions of this worker hold in storage, by kind (updates and"
            " snapshots: CRDT state; log: operations log)",
            ["kind"],
            registry=r,
        )
        self.stored_bytes_written = Counter(
            "collab_stored_bytes_written",
            "Bytes this worker wrote to storage for sessions, by kind",
            ["kind"],
            registry=r,
        )
        self.info = Gauge(
            "collab_worker_info",
            "Always 1; its label names this worker, for joins on `instance` in dashboards",
            ["worker"],
            registry=r,
        )
        for protocol in ("yjs", "json"):
            self.connections_active.labels(protocol)
        self.commits.labels("ok")
        for limit in ("update", "document"):
            self.limit_refusals.labels(limit)

    def storage_request(self, op: str, outcome: str) -> None:
        self.storage_requests.labels(op, outcome).inc()

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when it has none yet), for status endpoints."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def watch_event_loop(self, interval: float = 0.5) -> None:
        """Runs forever: the lag is how much later than asked a sleep returned."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(interval)
            self.event_loop_lag.set(max(0.0, time.monotonic() - start - interval))
