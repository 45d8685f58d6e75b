"""Reading a whole topic from outside any consumer group (thin kafka-python helpers)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from .kafka import make_consumer
from .settings import Settings


def partitions_of(consumer: KafkaConsumer, topic: str, timeout: float = 30.0) -> list[TopicPartition]:
    """Every partition of ``topic`` (waiting for its metadata; ``TimeoutError`` if it never shows)."""
    deadline = time.monotonic() + timeout
    while (partitions := consumer.partitions_for_topic(topic)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not found within {timeout:.0f}s")
        consumer.topics()  # refresh metadata
        time.sleep(0.2)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


def assign_all(consumer: KafkaConsumer, topics: str | Sequence[str], timeout: float = 30.0) -> list[TopicPartition]:
    """Assign every partition of the topic(s) to ``consumer`` (waiting for each topic to exist)."""
    names = [topics] if isinstance(topics, str) else list(topics)
    assigned = [tp for name in names for tp in partitions_of(consumer, name, timeout)]
    consumer.assign(assigned)
    return assigned


def end_offsets(
    settings: Settings, partitions: list[TopicPartition], timeout: float = 30.0
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition (its high watermark).

    Not just ``KafkaConsumer.end_offsets``: the embedded broker (Tansu 0.6) answers ListOffsets
    "latest" with the base offset of the last record batch plus one, so a batch of many records
    reads as one. The high watermark of a fetch at that offset is right on Tansu and on Kafka alike.
    """
    probe = make_consumer(settings, None)
    try:
        listed = probe.end_offsets(partitions)
        wanted = [tp for tp, end in listed.items() if end > 0]
        if not wanted:
            return listed
        probe.assign(wanted)
        for tp in wanted:
            probe.seek(tp, listed[tp] - 1)
        deadline = time.monotonic() + timeout
        while any(probe.highwater(tp) is None for tp in wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark for {len(wanted)} partition(s) within {timeout:.0f}s")
            probe.poll(timeout_ms=200)
        return {tp: max(end, probe.highwater(tp) or 0) if tp in wanted else end for tp, end in listed.items()}
    finally:
        probe.close(autocommit=False)


def read_to_end(settings: Settings, topic: str) -> Iterator[ConsumerRecord]:
    """Every record of ``topic`` from the beginning to its end as of now, partition by partition order."""
    consumer = make_consumer(settings, None)
    try:
        partitions = partitions_of(consumer, topic)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = end_offsets(settings, partitions)
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for messages in consumer.poll(timeout_ms=500).values():
                yield from messages
    finally:
        consumer.close(autocommit=False)
