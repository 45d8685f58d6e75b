"""The producers' Kafka adapter: encode, key by pupil, send acknowledged."""

from __future__ import annotations

from collections.abc import Iterable

from kafka.producer.future import FutureRecordMetadata

from ..infra.kafka import make_producer
from ..infra.settings import Settings
from ..schemas.models import Event
from ..schemas.validation import encode_event


class EventProducer:
    """Writes events to the raw topic, keyed by INE so that one pupil's events stay in order.

    ``send`` returns at once; ``flush`` returns when the broker has acknowledged everything sent,
    and raises if any record failed: a caller acknowledges its own input only after ``flush``.
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.raw_topic
        self._producer = make_producer(settings)
        self._pending: list[FutureRecordMetadata] = []

    def send(self, event: Event) -> None:
        """Queue one event."""
        self._pending.append(self._producer.send(self.topic, key=event.pupil.ine.encode(), value=encode_event(event)))

    def send_all(self, events: Iterable[Event]) -> int:
        """Queue events and flush; returns how many the broker acknowledged."""
        count = 0
        for event in events:
            self.send(event)
            count += 1
        self.flush()
        return count

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event is acknowledged; raise the first failure."""
        self._producer.flush(timeout)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=0)

    def close(self) -> None:
        """Flush and close."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
