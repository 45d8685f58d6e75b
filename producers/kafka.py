"""The producers' Kafka adapter: encode, key by pupil, send idempotently and acknowledged.

Built on confluent-kafka (librdkafka) rather than kafka-python: its idempotent producer works on
the embedded Tansu broker as on Apache Kafka, where kafka-python's and aiokafka's answer
UnknownError. With idempotence, acks=all and retries for up to ``delivery_timeout`` seconds, a
broker outage neither loses, duplicates nor reorders a pupil's events (``tests/test_producer_outage.py``
pauses the broker for 20 s to show it; kafka-python without idempotence duplicated about 2 % of
the records sent during the same outage). Keys are hashed with murmur2, as the Java client and
kafka-python do, so a pupil's events land on the same partition whichever client wrote them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from ..infra.kafka_auth import librdkafka_security
from ..infra.settings import Settings
from ..schemas.codec import event_codec
from ..schemas.errors import ScolafluxError
from ..schemas.models import Event
from ..schemas.validation import encode_event, validate_event
from .simulator import Record, avro_datum

LINGER_MS = 20
"""How long an event producer gathers records into a batch before it sends them. The embedded
broker's cost grows with the record batches its partitions hold: one hop (produce, then an aiokafka
fetch) at 2,000 records/s into 6 partitions had a p99 of 30 ms throughout 30 s with 20 ms (p50 17),
39 ms with 10 ms, and with 5 ms (librdkafka's default) 16 ms in the first 5 s rising to 750 ms
after 35 s, the broker's CPU growing with it. The feed's end-to-end p99 at 2,000 events/s (the
benchmark's latency section, alternated runs): 241 - 300 ms with 20 ms against 460 - 985 ms with
5. On Apache Kafka, 20 ms costs an event at most 20 ms and makes fewer, larger requests."""


class DeliveryFailed(ScolafluxError):
    """The broker did not acknowledge some events (they may or may not have been written)."""


@dataclass
class Delivery:
    """The fate of one sent record: ``done`` once the broker answered, ``error`` if it refused."""

    done: bool = False
    error: str | None = None
    partition: int | None = None
    offset: int | None = None
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    def _settle(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.error = error.str()
        else:
            self.partition, self.offset = message.partition(), message.offset()
        self.done = True
        self._event.set()


def producer_config(settings: Settings, idempotent: bool = True, delivery_timeout: float = 300.0) -> dict[str, Any]:
    """librdkafka settings of an event producer: acks from all replicas, idempotence, retries."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable.idempotence": idempotent,
        # without idempotence, one request in flight keeps a pupil's order across retries
        **({} if idempotent else {"max.in.flight.requests.per.connection": 1}),
        "partitioner": "murmur2_random",
        "linger.ms": LINGER_MS,
        "message.timeout.ms": int(delivery_timeout * 1000),
        "request.timeout.ms": 10_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        "queue.buffering.max.messages": 1_000_000,
        "log_level": 3,
        **librdkafka_security(settings),
    }


class EventProducer:
    """Writes events to the raw topic, keyed by INE so that one pupil's events stay in order.

    ``send`` returns at once; ``flush`` returns when the broker has acknowledged everything sent,
    and raises ``DeliveryFailed`` if any record failed: a caller acknowledges its own input only
    after ``flush``. Thread-safe: several threads may send and wait at the same time.

    Idempotent unless ``idempotent=False``; ``Settings.kafka_idempotence`` is not read here: it
    exists for the kafka-python and aiokafka producers, whose idempotence fails on the embedded broker.
    """

    def __init__(
        self, settings: Settings, *, idempotent: bool = True, delivery_timeout: float = 300.0, topic: str | None = None
    ) -> None:
        if settings.kafka_bootstrap is None:
            raise ValueError("settings.kafka_bootstrap is not set: start a broker first")
        self.topic = topic or settings.raw_topic
        self._producer = Producer(producer_config(settings, idempotent, delivery_timeout))
        self._lock = threading.Lock()
        self._failures: list[str] = []

    def send(self, event: Event) -> Delivery:
        """Queue one validated event."""
        return self.send_encoded(event.pupil.ine.encode(), encode_event(event))

    def send_record(self, record: Record, validate: bool = True) -> Delivery:
        """Queue one record in the codec's shape (as the simulators make them); ``validate=False``
        skips the pydantic validation for trusted input (the codec still checks the types)."""
        if validate:
            return self.send(validate_event(record))
        return self.send_encoded(record["pupil"]["ine"].encode(), event_codec().encode(avro_datum(record)))

    def send_encoded(
        self,
        key: bytes | None,
        value: bytes,
        topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        """Queue one encoded record (to the raw topic unless ``topic``); waits for room while the
        local queue is full."""
        delivery = Delivery()

        def settle(error: KafkaError | None, message: Message) -> None:
            delivery._settle(error, message)
            if error is not None:
                with self._lock:
                    self._failures.append(delivery.error or "unknown error")

        while True:
            try:
                self._producer.produce(topic or self.topic, value, key, headers=headers, on_delivery=settle)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)
        return delivery

    def send_frames(self, frames: Iterable[tuple[bytes, bytes]]) -> int:
        """Queue encoded (key, value) records to the raw topic, the fast way (no per-record
        ``Delivery``: failures are counted and raised by the next ``flush``). Returns how many."""
        produce, poll, topic, settle = self._producer.produce, self._producer.poll, self.topic, self._on_bulk_delivery
        sent = 0
        for key, value in frames:
            while True:
                try:
                    produce(topic, value, key, on_delivery=settle)
                    break
                except BufferError:
                    poll(0.005)
            sent += 1
            if not sent % 1000:
                poll(0)
        return sent

    def _on_bulk_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            with self._lock:
                self._failures.append(error.str())

    def send_all(self, events: Iterable[Event]) -> int:
        """Queue events and flush; returns how many the broker acknowledged."""
        count = 0
        for event in events:
            self.send(event)
            count += 1
        self.flush()
        return count

    def wait(self, deliveries: Iterable[Delivery], timeout: float | None = None) -> bool:
        """Serve delivery reports until every one of ``deliveries`` is settled (True) or the
        timeout passes (False). Failures are left in each ``Delivery.error``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delivery in deliveries:
            while not delivery.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._producer.poll(0.05 if left is None else min(0.05, left))
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event is acknowledged; raise ``DeliveryFailed`` on any failure."""
        left = self._producer.flush(-1 if timeout is None else timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        if left:
            raise DeliveryFailed(f"{left} events not acknowledged within {timeout}s")
        if failures:
            raise DeliveryFailed(f"{len(failures)} events refused by the broker; first: {failures[0]}")

    def close(self) -> None:
        """Flush, then release the client; what could not be flushed is dropped (and raised)."""
        try:
            self.flush()
        except DeliveryFailed:
            self._producer.purge()
            raise
        finally:
            self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
