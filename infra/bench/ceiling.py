"""The ceiling of this machine: librdkafka producing, then consuming, 300-byte records on the broker.

A pass-through (read a record, write it on) pays for one consume and one produce per record, so
its ceiling is the harmonic combination of the two rates: ``1 / (1/produce + 1/consume)``.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import KafkaException, TopicPartition

from ...consumers.runner import partitions_of
from ..kafka import TopicSpec, ensure_topics
from ..settings import Settings
from .records import produce, reader

VALUE_SIZE = 300
PARTITIONS = 6


@dataclass(frozen=True)
class Ceiling:
    """Records per second produced, consumed, and their pass-through combination."""

    produce: float
    consume: float

    @property
    def passthrough(self) -> float:
        """The rate of a pass-through that produces and consumes each record once."""
        return 1 / (1 / self.produce + 1 / self.consume)


def measure_ceiling(bootstrap: str, count: int, prefix: str = "bench") -> Ceiling:
    """Produce ``count`` records to a fresh 6-partition topic, then consume them all; time each."""
    topic = f"{prefix}.ceiling.{uuid.uuid4().hex[:8]}"
    ensure_topics(Settings(kafka_bootstrap=bootstrap), [TopicSpec(topic, PARTITIONS)])
    value = os.urandom(VALUE_SIZE)
    records = ((f"k{i:010d}".encode(), value) for i in range(count))
    produced, produce_seconds = produce(bootstrap, topic, records)
    return Ceiling(produced / produce_seconds, (count - 1) / _consume_all(bootstrap, topic, count))


def _consume_all(bootstrap: str, topic: str, count: int, timeout: float = 120.0) -> float:
    """Seconds from the first to the last of ``count`` records consumed from the start of ``topic``
    (assignment, no group; connecting and the first fetch's wait are not counted)."""
    consumer = reader(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions_of(consumer, topic)])
        seen = 0
        deadline = time.monotonic() + timeout
        first = time.perf_counter()
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumed {seen} of {count} records within {timeout:.0f}s")
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is not None:
                    raise KafkaException(message.error())
                if not seen:
                    first = time.perf_counter()
                seen += 1
        return time.perf_counter() - first
    finally:
        consumer.close()
