"""The thin Kafka adapter of a view: read its delivery topics, apply batches with their offsets.

The maintainer assigns itself every partition of each of its authority's delivery topics (one per
convention; no group join to wait for) and resumes from the offsets stored with the view. It also
commits them to Kafka under its group id, for lag monitoring only: the database is the source of
truth. Retention runs at start and then every ``retention_interval`` seconds.

It reads with librdkafka (confluent-kafka): fetched records reach Python as C objects, ~4 µs of
CPU a record against ~10 µs with kafka-python.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Message
from confluent_kafka import TopicPartition as Partition
from sqlalchemy import Engine

from ..infra.kafka import VIEW_FETCH_WAIT_MS
from ..infra.kafka_auth import librdkafka_security
from ..infra.metrics import Metrics
from ..infra.runtime import collect_less_often
from ..infra.settings import Settings
from .ledger import apply_retention
from .store import BatchOutcome, Record, View, apply_batch, load_offsets

log = logging.getLogger(__name__)

BATCH_SIZE = 5_000
"""Records applied in one transaction at most (unless a maintainer is given its own)."""


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
        self.batch_size = batch_size or BATCH_SIZE
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        self._next_retention = 0.0
        self._positions: dict[tuple[str, int], int | None] = {}
        """Next offset to apply per (topic, partition); ``None`` until known (read from the start)."""
        view.create(engine)

    def run(self, stop: threading.Event, on_batch: Callable[[int, int], None] | None = None) -> None:
        """Apply deliveries until ``stop`` is set."""
        consumer = self.open_consumer()
        try:
            while not stop.is_set():
                self.poll_once(consumer, on_batch)
        finally:
            consumer.close()

    def catch_up(self, timeout: float = 300.0) -> int:
        """Apply everything the topics hold now, then return how many deliveries were applied (rebuilds).

        "Now" is each partition's high watermark in the first fetch answer that names it (the
        consumer caches it): ListOffsets is not enough on the embedded broker (see infra/topics.py).
        """
        consumer = self.open_consumer()
        try:
            ends: dict[tuple[str, int], int] = {}
            deadline = time.monotonic() + timeout
            while len(ends) < len(self._positions) or any(self._positions[key] < end for key, end in ends.items()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"view not caught up within {timeout:.0f}s")
                self.poll_once(consumer)
                for topic, partition in self._positions.keys() - ends.keys():
                    low, high = consumer.get_watermark_offsets(Partition(topic, partition), cached=True)
                    if low >= 0 and high >= 0:  # fetched at least once
                        ends[(topic, partition)] = high
                        if self._positions[(topic, partition)] is None:  # read from its start
                            self._positions[(topic, partition)] = low
            return self.applied
        finally:
            consumer.close()

    def open_consumer(self) -> Consumer:
        """A consumer assigned every partition of the view's topics, from the offsets stored with it."""
        collect_less_often()
        self._positions = {}
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": self.group_id,  # commits for lag monitoring only, never a group join
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": VIEW_FETCH_WAIT_MS,
                "log_level": 3,  # librdkafka's errors only, as the event producers
                **librdkafka_security(self.settings),
            }
        )
        try:
            assigned = []
            for topic in self.topics:
                stored = load_offsets(self.engine, topic)
                for partition in partitions_of(consumer, topic):
                    self._positions[(topic, partition)] = stored.get(partition)
                    assigned.append(Partition(topic, partition, stored.get(partition, OFFSET_BEGINNING)))
            consumer.assign(assigned)
        except BaseException:
            consumer.close()
            raise
        return consumer

    def poll_once(self, consumer: Consumer, on_batch: Callable[[int, int], None] | None = None) -> int:
        """Read one batch (what is already fetched, up to the batch size) and apply it; returns how
        many records it held."""
        self.apply_retention_if_due()
        first = consumer.poll(0.2)
        if first is None:
            return 0
        queued = consumer.consume(self.batch_size - 1, 0) if self.batch_size > 1 else []
        records = _records([first, *queued])
        if not records:
            return 0
        outcome = apply_batch(self.engine, records, self.view)
        self._account(outcome, records)
        reached = {(r.topic, r.partition): r.offset + 1 for r in records}
        self._positions.update(reached)
        consumer.commit(offsets=[Partition(t, p, o) for (t, p), o in reached.items()], asynchronous=False)
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


def partitions_of(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[int]:
    """The partitions of ``topic`` (waiting for the topic to exist)."""
    deadline = time.monotonic() + timeout
    while True:
        found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return sorted(found.partitions)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not found within {timeout:.0f}s")
        time.sleep(0.2)


def _records(messages: list[Message]) -> list[Record]:
    records = []
    for m in messages:
        if (error := m.error()) is not None:
            if error.fatal():
                raise KafkaException(error)
            log.warning("view consumer: %s", error)  # librdkafka retries by itself
            continue
        kind, timestamp = m.timestamp()
        stamp = None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp
        records.append(Record(m.topic(), m.partition(), m.offset(), m.value(), m.headers() or [], stamp))
    return records


def run_retention(engine: Engine, retention_days: dict[str | None, int], now: dt.datetime | None = None) -> int:
    """Delete rows older than each convention's retention (key ``None``: the default), counted."""
    moment = now or dt.datetime.now(dt.UTC)
    cutoffs = {convention: moment - dt.timedelta(days=days) for convention, days in retention_days.items()}
    with engine.begin() as conn:
        deleted = apply_retention(conn, cutoffs)
    if deleted:
        log.info("retention deleted %d expired rows", deleted)
    return deleted
