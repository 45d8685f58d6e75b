"""One metrics object per process, on an injected registry. Pipeline code calls its methods and
never imports prometheus_client itself. No pupil identifier is ever a label value.

Names follow Prometheus conventions: the ``scolaflux_`` prefix, ``_total`` counters, base units
(``_seconds``), and gauges named for what they measure. Labels are topics, consumer groups,
partitions, conventions, authorities (``level:code``, e.g. ``commune:69123``), stages and reason
categories: never a pupil.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PROCESSOR_STAGES = ("conventions", "pipeline", "acknowledgements", "commit")
"""The stages of a processor batch, one series each in ``scolaflux_processor_batch_stage_seconds``."""
GROUP_STATUSES = ("OK", "WARNING", "REWIND", "STALLED", "STOPPED", "ERROR")
"""The consumer-group verdicts (see ``infra/burrow.py``), one series each in ``scolaflux_consumer_group_status``."""

_PUPIL_IDENTIFIER = re.compile(r"(?<![0-9A-Z])(?:[0-9]{9}[A-Z]{2}|[0-9]{10}[A-Z]|[0-9]{4}A[0-9]{5}[A-Z])(?![0-9A-Z])")
REDACTED = "redacted"


def safe_label(value: object) -> str:
    """``value`` as a label value, or ``"redacted"`` if it holds something shaped like an INE.

    A last guard: callers never pass pupil data, but a label must not become the one place an INE
    leaks if one slips into, say, a convention id.
    """
    text = str(value)
    if _PUPIL_IDENTIFIER.search(text.upper()):
        log.warning("a metric label value shaped like a pupil identifier (INE) was redacted")
        return REDACTED
    return text


class Metrics:
    """The ``scolaflux_`` metrics of one process.

    Every process builds one and serves it on ``/metrics`` (``infra.health.serve``). The monitor
    (``scolaflux monitor``) sets the lag, freshness and verdict gauges; the others count what they do
    through the methods, which also guard label values (``safe_label``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._consumed = Counter(
            "scolaflux_events_consumed_total", "Records read from Kafka, by topic.", ["topic"], registry=r
        )
        self._produced = Counter(
            "scolaflux_events_produced_total",
            "Source events written to Kafka, by topic and event type.",
            ["topic", "event_type"],
            registry=r,
        )
        self._rejects = Counter(
            "scolaflux_rejects_total",
            "Records rejected, by stage (producer, processor, view) and reason category.",
            ["stage", "reason"],
            registry=r,
        )
        self._deadletters = Counter(
            "scolaflux_deadletter_records_total",
            "Records written to the dead-letter topic, by reason category.",
            ["reason"],
            registry=r,
        )
        self._deliveries = Counter(
            "scolaflux_deliveries_total", "Deliveries written, by convention.", ["convention"], registry=r
        )
        self._applied = Counter(
            "scolaflux_view_deliveries_applied_total",
            "Deliveries applied to an authority's view.",
            ["authority"],
            registry=r,
        )
        self._end_to_end = Histogram(
            "scolaflux_end_to_end_latency_seconds",
            "From the source event's entry into the platform (its raw record's Kafka timestamp, carried by "
            "the delivery) to the view update that applies it.",
            ["authority"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._view_updated = Gauge(
            "scolaflux_view_last_update_timestamp_seconds",
            "Unix time of the last batch applied to an authority's view.",
            ["authority"],
            registry=r,
        )
        self._freshness = Gauge(
            "scolaflux_view_freshness_seconds",
            "How far an authority's view is behind its feed: age of the oldest delivery not yet applied (0: current).",
            ["authority"],
            registry=r,
        )
        self._lag_records = Gauge(
            "scolaflux_consumer_lag_records",
            "Records not yet consumed (log-end minus committed offset), by group and partition.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self._lag_seconds = Gauge(
            "scolaflux_consumer_lag_seconds",
            "Age of the oldest record not yet consumed (0 when caught up), by group and partition.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self._group_status = Gauge(
            "scolaflux_consumer_group_status",
            "Burrow-style verdict of a consumer group: 1 for its current status, 0 for the others.",
            ["group", "status"],
            registry=r,
        )
        self._rebalances = Counter(
            "scolaflux_rebalances_total", "Partition assignments received by a group member.", ["group"], registry=r
        )
        self._batch_stages = Histogram(
            "scolaflux_processor_batch_stage_seconds",
            "Time a processor batch of raw events spends in each stage: conventions (catching up with the "
            "conventions topic), pipeline (routing and handing the outputs to the producer), acknowledgements "
            "(until the broker has them all) and commit (both while the next batch is processed).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._fetched_age = Histogram(
            "scolaflux_processor_fetched_age_seconds",
            "Age of the oldest raw event of each processor batch when the worker gets it (from its Kafka "
            "timestamp): the wait in the broker and in the batch before.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # -- counters the pipeline calls --------------------------------------------------------

    def event_consumed(self, topic: str, n: int = 1) -> None:
        """``n`` records read from ``topic``."""
        self._consumed.labels(safe_label(topic)).inc(n)

    def event_produced(self, topic: str, event_type: str, n: int = 1) -> None:
        """``n`` source events of ``event_type`` written to ``topic``."""
        self._produced.labels(safe_label(topic), safe_label(event_type)).inc(n)

    def rejected(self, stage: str, reason: str, n: int = 1) -> None:
        """``n`` records rejected at ``stage`` for ``reason`` (a category such as decode, invalid)."""
        self._rejects.labels(safe_label(stage), safe_label(reason)).inc(n)

    def dead_lettered(self, stage: str, reason: str, n: int = 1) -> None:
        """``n`` records rejected at ``stage`` and written to the dead-letter topic."""
        self.rejected(stage, reason, n)
        self._deadletters.labels(safe_label(reason)).inc(n)

    def delivered(self, convention: str, n: int = 1) -> None:
        """``n`` deliveries written under ``convention``."""
        self._deliveries.labels(safe_label(convention)).inc(n)

    def view_applied(self, authority: str, n: int, latencies_seconds: Iterable[float] = ()) -> None:
        """``n`` deliveries applied to ``authority``'s view; one end-to-end latency per delivery."""
        label = safe_label(authority)
        self._applied.labels(label).inc(n)
        histogram = self._end_to_end.labels(label)
        for latency in latencies_seconds:
            histogram.observe(max(latency, 0.0))
        self._view_updated.labels(label).set(time.time())

    def processor_batch(self, oldest_age: float | None, stages: Iterable[tuple[str, float]]) -> None:
        """One processor batch: the age of its oldest record when fetched (None: no timestamp), and
        the seconds of each of its ``PROCESSOR_STAGES``."""
        if oldest_age is not None:
            self._fetched_age.observe(max(oldest_age, 0.0))
        for stage, seconds in stages:
            if stage not in PROCESSOR_STAGES:
                raise ValueError(f"processor stage must be one of {', '.join(PROCESSOR_STAGES)}")
            self._batch_stages.labels(stage).observe(seconds)

    def rebalanced(self, group: str) -> None:
        """A member of ``group`` received a new assignment."""
        self._rebalances.labels(safe_label(group)).inc()

    # -- gauges the monitor sets ------------------------------------------------------------

    def view_freshness(self, authority: str, seconds: float) -> None:
        """How far ``authority``'s view is behind its feed (0: current)."""
        self._freshness.labels(safe_label(authority)).set(seconds)

    def consumer_lag(self, group: str, topic: str, partition: int, records: int, seconds: float | None) -> None:
        """Lag of ``group`` on one partition, in records and (when known) in seconds."""
        labels = (safe_label(group), safe_label(topic), str(partition))
        self._lag_records.labels(*labels).set(records)
        if seconds is not None:
            self._lag_seconds.labels(*labels).set(seconds)

    def group_status(self, group: str, status: str) -> None:
        """The current verdict of ``group`` (one of ``GROUP_STATUSES``)."""
        if status not in GROUP_STATUSES:
            raise ValueError(f"group status must be one of {', '.join(GROUP_STATUSES)}")
        label = safe_label(group)
        for name in GROUP_STATUSES:
            self._group_status.labels(label, name).set(1 if name == status else 0)

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP; returns the port. (``infra.health.serve`` adds /livez and /readyz.)"""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name the registry can expose (``_total``, ``_bucket``… included), labelled or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names
