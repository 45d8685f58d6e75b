"""The thin Kafka adapter of a view: read its delivery topics, apply batches with their offsets.

The maintainer assigns itself every partition of each of its authority's delivery topics (one per
convention; no group join to wait for) and resumes from the offsets stored with the view. It also
commits them to Kafka under its group id, for lag monitoring only: the database is the source of
truth. Retention runs at start and then every ``retention_interval`` seconds.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from sqlalchemy import Engine

from ..infra.kafka import VIEW_FETCH_WAIT_MS, make_consumer
from ..infra.metrics import Metrics
from ..infra.settings import Settings
from ..infra.topics import end_offsets
from .ledger import apply_retention
from .store import BatchOutcome, Record, View, apply_batch, load_offsets

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 100_000
"""Allocations between two collections of the youngest generation while a view applies batches.

A batch of thousands of deliveries allocates ~10 containers a delivery (decoded records, rows),
alive until the batch is committed: with Python's default (700) the collector ran dozens of times
a batch, walking them through every generation, ~10 µs of CPU a delivery (a tenth of it). The
garbage of a batch has no cycles (freed by reference counts), so collecting less often costs no
memory. Process-wide: only ever raised, never lowered."""


def assign_all(consumer: KafkaConsumer, topic: str | Sequence[str], timeout: float = 30.0) -> list[TopicPartition]:
    """Assign every partition of the topic(s) to ``consumer`` (waiting for each topic to exist)."""
    topics = [topic] if isinstance(topic, str) else list(topic)
    deadline = time.monotonic() + timeout
    assigned: list[TopicPartition] = []
    for name in topics:
        while (partitions := consumer.partitions_for_topic(name)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} not found within {timeout:.0f}s")
            consumer.topics()  # refresh metadata
            time.sleep(0.2)
        assigned.extend(TopicPartition(name, p) for p in sorted(partitions))
    consumer.assign(assigned)
    return assigned


class ViewMaintainer:
    """Keeps one authority's view up to date from its delivery topics (one per convention)."""

    def __init__(
        self,
        settings: Settings,
        topics: str | Sequence[str],
        view: View,
        engine: Engine,
        group_id: str | None = None,
        metrics: Metrics | None = None,
        retention_days: dict[str | None, int] | None = None,
        retention_interval: float = 3600.0,
        batch_size: int | None = None,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.topic = self.topics[0]
        self.view, self.engine, self.settings, self.metrics = view, engine, settings, metrics
        self.group_id = group_id or f"{settings.topic_prefix}-view-{view.name}"
        self.retention_days = retention_days or {}
        self.retention_interval = retention_interval
        self.batch_size = batch_size
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        self._next_retention = 0.0
        view.create(engine)

    def run(self, stop: threading.Event, on_batch: Callable[[int, int], None] | None = None) -> None:
        """Apply deliveries until ``stop`` is set."""
        consumer = self._consumer()
        try:
            while not stop.is_set():
                self.poll_once(consumer, on_batch)
        finally:
            consumer.close(autocommit=False)

    def catch_up(self, timeout: float = 300.0) -> int:
        """Apply everything the topics hold now, then return how many deliveries were applied (rebuilds)."""
        consumer = self._consumer()
        try:
            partitions = list(consumer.assignment())
            ends = end_offsets(self.settings, partitions)  # not ListOffsets alone: see infra/topics.py
            deadline = time.monotonic() + timeout
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"view not caught up within {timeout:.0f}s")
                self.poll_once(consumer)
            return self.applied
        finally:
            consumer.close(autocommit=False)

    def _consumer(self) -> KafkaConsumer:
        collect_less_often()
        limits: dict[str, object] = {"fetch_max_wait_ms": VIEW_FETCH_WAIT_MS}
        if self.batch_size:
            limits["max_poll_records"] = self.batch_size
        consumer = make_consumer(self.settings, self.group_id, **limits)
        partitions = assign_all(consumer, self.topics)
        stored = {topic: load_offsets(self.engine, topic) for topic in self.topics}
        for tp in partitions:
            if tp.partition in stored[tp.topic]:
                consumer.seek(tp, stored[tp.topic][tp.partition])
            else:
                consumer.seek_to_beginning(tp)
        return consumer

    def poll_once(self, consumer: KafkaConsumer, on_batch: Callable[[int, int], None] | None = None) -> int:
        """Read one batch and apply it; returns how many records it held."""
        self.apply_retention_if_due()
        polled = consumer.poll(timeout_ms=200)
        records = [
            Record(m.topic, m.partition, m.offset, m.value, list(m.headers or []), m.timestamp)
            for messages in polled.values()
            for m in messages
        ]
        if not records:
            return 0
        outcome = apply_batch(self.engine, records, self.view)
        self._account(outcome, records)
        consumer.commit(
            {
                TopicPartition(m[-1].topic, m[-1].partition): OffsetAndMetadata(m[-1].offset + 1, "", -1)
                for m in polled.values()
            }
        )
        if on_batch:
            on_batch(len(outcome.applied), len(outcome.rejected))
        return len(records)

    def _account(self, outcome: BatchOutcome, records: list[Record]) -> None:
        self.applied += len(outcome.applied)
        self.duplicates += outcome.duplicates
        self.rejected += len(outcome.rejected)
        for _record, category, reason in outcome.rejected:
            log.warning("view %s set a delivery aside (%s): %s", self.view.name, category, reason)
        if self.metrics is None:
            return
        # End to end: from the source event's entry into the platform (the Kafka timestamp the
        # processor gives its deliveries) to this view update. Event times are the school's clock.
        applied_ms = outcome.applied_at.timestamp() * 1000
        latencies = [(applied_ms - r.timestamp_ms) / 1000 for r in records if r.timestamp_ms] if outcome.applied else []
        self.metrics.view_applied(self.view.name, len(outcome.applied), latencies)
        for _record, category, _reason in outcome.rejected:
            self.metrics.rejected("view", category)

    def apply_retention_if_due(self, now: dt.datetime | None = None) -> int:
        """Delete expired rows when the interval has passed; returns how many were deleted."""
        if not self.retention_days or time.monotonic() < self._next_retention:
            return 0
        self._next_retention = time.monotonic() + self.retention_interval
        return run_retention(self.engine, self.retention_days, now)


def collect_less_often(threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Raise the garbage collector's youngest threshold to ``threshold`` (see ``GC_YOUNG_THRESHOLD``)."""
    young, *older = gc.get_threshold()
    if 0 < young < threshold:
        gc.set_threshold(threshold, *older)


def run_retention(engine: Engine, retention_days: dict[str | None, int], now: dt.datetime | None = None) -> int:
    """Delete rows older than each convention's retention (key ``None``: the default), counted."""
    moment = now or dt.datetime.now(dt.UTC)
    cutoffs = {convention: moment - dt.timedelta(days=days) for convention, days in retention_days.items()}
    with engine.begin() as conn:
        deleted = apply_retention(conn, cutoffs)
    if deleted:
        log.info("retention deleted %d expired rows", deleted)
    return deleted
