"""The benchmark's own Kafka plumbing (librdkafka, through confluent-kafka): fast bulk produce and
reads that learn when records were written, without joining a consumer group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from ...consumers.runner import partitions_of

Record = tuple[bytes | None, bytes]
"""A key and a value."""
READ_SECONDS = 0.1
"""The longest a read waits for records: the resolution of the times a ``Span`` notes."""


def bulk_producer(bootstrap: str) -> Producer:
    """A producer tuned for throughput, still acknowledged by the broker (acks=all)."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1024 * 1024,
            "partitioner": "murmur2_random",
            "log_level": 3,
        }
    )


def produce(bootstrap: str, topic: str, records: Iterable[Record]) -> tuple[int, float]:
    """Write records and wait for every acknowledgement: how many, and the seconds it took."""
    producer = bulk_producer(bootstrap)
    failures: list[str] = []

    def settle(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.perf_counter()
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=settle)
                break
            except BufferError:
                producer.poll(0.01)
        count += 1
    left = producer.flush(120)
    elapsed = time.perf_counter() - started
    if left or failures:
        raise RuntimeError(f"{left} records unacknowledged, {len(failures)} refused: {failures[:1]}")
    return count, elapsed


def reader(bootstrap: str) -> Consumer:
    """A consumer outside any group (partitions are assigned, offsets never committed).

    Its fetches wait at most 10 ms for data: the embedded broker holds a fetch for a good part of
    its maximum wait even when records are there, which would blur the times records are seen.
    """
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 50 * 1024 * 1024,
            "fetch.wait.max.ms": 10,
            "log_level": 3,
        }
    )


def end_offsets(bootstrap: str, topics: Iterable[str], timeout: float = 30.0) -> dict[tuple[str, int], int]:
    """The end (high watermark) of every partition of ``topics``.

    Not ListOffsets alone: the embedded broker (Tansu) answers "latest" with the base offset of a
    partition's last record batch plus one, so the rest of that batch is not counted (the processor
    writes batches of many records). The high watermark of a fetch is right on Tansu and on Kafka
    alike: each partition that holds records is fetched from just before its listed end.
    """
    consumer = reader(bootstrap)
    try:
        listed = {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for topic in topics
            for p in partitions_of(consumer, topic)
        }
        fetched = [TopicPartition(t, p, end - 1) for (t, p), end in listed.items() if end > 0]
        consumer.assign(fetched)
        deadline = time.monotonic() + timeout
        while any(consumer.get_watermark_offsets(tp, cached=True)[1] < 0 for tp in fetched):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark for some of {len(fetched)} partitions within {timeout:.0f}s")
            for message in consumer.consume(num_messages=10_000, timeout=READ_SECONDS):
                if message.error() is not None:
                    raise KafkaException(message.error())
        highs = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, cached=True)[1] for tp in fetched}
        return {tp: max(end, highs.get(tp, 0)) for tp, end in listed.items()}
    finally:
        consumer.close()


@dataclass
class Span:
    """What a read saw: how many records, and when it saw the first and the last (wall clock, s).

    Times are those of arrival at this reader, not the records' timestamps: the processor stamps
    each delivery with its source event's time (for the views' latency), not with its own.
    """

    count: int = 0
    first: float | None = None
    last: float | None = None
    values: list[bytes] = field(default_factory=list)
    seen: set[Hashable] = field(default_factory=set, repr=False)

    @property
    def seconds(self) -> float:
        """From the first record seen to the last; never under one read's wait (``READ_SECONDS``),
        the resolution of these times (tiny runs may see every record in one read)."""
        if self.first is None or self.last is None:
            return READ_SECONDS
        return max(self.last - self.first, READ_SECONDS)

    def rate(self) -> float:
        """Records per second between the first record seen and the last (the first excluded)."""
        return max(self.count - 1, 1) / self.seconds


def read_span(
    bootstrap: str,
    starts: dict[tuple[str, int], int],
    count: int,
    timeout: float,
    keep: Callable[[bytes], bool] | None = None,
    identity: Callable[[bytes], Hashable] | None = None,
    give_up: Callable[[], str | None] | None = None,
) -> Span:
    """Read ``count`` records from ``starts`` (topic, partition -> offset), noting when they come.

    ``keep`` selects the values to keep in ``Span.values`` (None: keep none). With ``identity``,
    only distinct records count (a record written again, as at-least-once delivery may, does not).
    ``give_up`` is asked between reads: a reason it returns ends the wait at once (RuntimeError).
    """
    consumer = reader(bootstrap)
    span = Span()
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in starts.items()])
        deadline = time.monotonic() + timeout
        while span.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {span.count} of {count} records within {timeout:.0f}s")
            reason = give_up() if give_up is not None else None
            if reason:
                raise RuntimeError(f"saw {span.count} of {count} records; {reason}")
            messages = consumer.consume(num_messages=10_000, timeout=READ_SECONDS)
            seen = time.time()
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                value = message.value()
                if identity is not None and value is not None:
                    ident = identity(value)
                    if ident in span.seen:
                        continue
                    span.seen.add(ident)
                span.count += 1
                span.first = seen if span.first is None else span.first
                span.last = seen
                if keep is not None and value is not None and keep(value):
                    span.values.append(value)
        return span
    finally:
        consumer.close()
