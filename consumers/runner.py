"""The thin Kafka adapter of a view: read its delivery topic, apply batches with their offsets.

The view assigns itself every partition of its topic (no group join to wait for) and resumes from
the offsets stored with the view. It also commits them to Kafka under its group id, for lag
monitoring only: the database is the source of truth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from sqlalchemy import Engine

from ..infra.kafka import make_consumer
from ..infra.settings import Settings
from .store import Record, View, apply_batch, load_offsets

log = logging.getLogger(__name__)


def assign_all(consumer: KafkaConsumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Assign every partition of ``topic`` to ``consumer`` (waiting for the topic to exist)."""
    deadline = time.monotonic() + timeout
    while (partitions := consumer.partitions_for_topic(topic)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not found within {timeout:.0f}s")
        consumer.topics()  # refresh metadata
        time.sleep(0.2)
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    return assigned


class ViewMaintainer:
    """Keeps one view up to date from one delivery topic."""

    def __init__(self, settings: Settings, topic: str, view: View, engine: Engine, group_id: str | None = None) -> None:
        self.topic, self.view, self.engine = topic, view, engine
        self.group_id = group_id or f"{settings.topic_prefix}-view-{topic}"
        self.settings = settings
        self.applied = 0
        self.rejected = 0
        view.create(engine)

    def run(self, stop: threading.Event, on_batch: Callable[[int, int], None] | None = None) -> None:
        """Apply deliveries until ``stop`` is set."""
        consumer = make_consumer(self.settings, self.group_id)
        try:
            partitions = assign_all(consumer, self.topic)
            stored = load_offsets(self.engine, self.topic)
            for tp in partitions:
                if tp.partition in stored:
                    consumer.seek(tp, stored[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            while not stop.is_set():
                self.poll_once(consumer, on_batch)
        finally:
            consumer.close(autocommit=False)

    def poll_once(self, consumer: KafkaConsumer, on_batch: Callable[[int, int], None] | None = None) -> int:
        """Read one batch and apply it; returns how many records it held."""
        polled = consumer.poll(timeout_ms=200)
        records = [
            Record(m.topic, m.partition, m.offset, m.value, list(m.headers or []))
            for messages in polled.values()
            for m in messages
        ]
        if not records:
            return 0
        applied, rejected = apply_batch(self.engine, records, self.view)
        self.applied += applied
        self.rejected += rejected
        consumer.commit(
            {
                TopicPartition(m[-1].topic, m[-1].partition): OffsetAndMetadata(m[-1].offset + 1, "", -1)
                for m in polled.values()
            }
        )
        if on_batch:
            on_batch(applied, rejected)
        return len(records)
