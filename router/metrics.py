"""Every router metric, declared once (DESIGN §10); one registry per router."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections_active = Gauge(
            "collab_router_connections_active", "Client WebSockets being relayed", registry=r
        )
        self.routed = Counter(
            "collab_router_routed_total",
            "Client connections routed, by worker",
            ["worker"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "collab_router_upstream_errors_total",
            "Connections a worker could not take (unreachable, refused, failed handshake)",
            registry=r,
        )
        self.workers = Gauge(
            "collab_router_workers", "Known workers by state", ["state"], registry=r
        )
        self.handoffs = Counter(
            "collab_router_handoffs_total",
            "Live sessions whose owner changed and whose clients were sent to the new owner",
            registry=r,
        )
        self.redirects = Counter(
            "collab_router_redirects_total",
            "Connections sent to a session's recorded owner instead of the ring's proposal",
            registry=r,
        )
        self.client_errors = Counter(
            "collab_router_client_errors_total",
            "Client connections refused before routing (bad handshake, bad first message, auth)",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
