"""One metrics object per process, on an injected registry. Pipeline code calls its methods and
never imports prometheus_client itself. No pupil identifier is ever a label value."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The scolaflux_ metrics of one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "scolaflux_events_consumed_total", "Records read, by topic.", ["topic"], registry=r
        )
        self.events_produced = Counter(
            "scolaflux_events_produced_total",
            "Records written, by topic and type.",
            ["topic", "event_type"],
            registry=r,
        )
        self.rejects = Counter(
            "scolaflux_rejects_total", "Records rejected, by stage and reason.", ["stage", "reason"], registry=r
        )
        self.deliveries = Counter(
            "scolaflux_deliveries_total", "Deliveries, by convention.", ["convention"], registry=r
        )
        self.view_applied = Counter(
            "scolaflux_view_deliveries_applied_total", "Deliveries applied to a view.", ["authority"], registry=r
        )
        self.end_to_end = Histogram(
            "scolaflux_end_to_end_latency_seconds",
            "From the event's recording to its view update.",
            ["authority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP; returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port
