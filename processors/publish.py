"""Publishing conventions to the compacted conventions topic (key: convention id; value: its history).

Publishing a file adds its version to the convention's history on the topic: the same version again
changes nothing, a new version is appended (it must take effect after the previous one), and a
version already published with another text is refused. Each new convention's delivery topic is
created before the convention is published, so the processor can write to it at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..infra.kafka import delivery_topics, ensure_topics, make_producer
from ..infra.settings import Settings
from ..infra.topics import read_to_end
from .conventions import Convention
from .history import ConventionHistory, merge
from .live import apply_records


def read_histories(settings: Settings) -> dict[str, ConventionHistory]:
    """The convention histories on the conventions topic now (tombstoned ones left out)."""
    records = ((r.key, r.value) for r in read_to_end(settings, settings.conventions_topic))
    return apply_records({}, records)


def publish(settings: Settings, conventions: Iterable[tuple[str, Convention]]) -> list[ConventionHistory]:
    """Publish conventions (source name, convention); returns the histories that changed.

    Raises ``ConfigError`` (naming the source file) when a version conflicts with what is published.
    """
    assert settings.kafka_bootstrap is not None
    changed = merge(read_histories(settings), conventions)
    if not changed:
        return []
    ensure_topics(settings, delivery_topics(settings, changed))
    producer = make_producer(settings)
    try:
        futures = [
            producer.send(settings.conventions_topic, key=cid.encode(), value=history.to_bytes())
            for cid, history in sorted(changed.items())
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=0)
    finally:
        producer.close()
    return [changed[cid] for cid in sorted(changed)]


def withdraw(settings: Settings, convention_id: str) -> None:
    """Remove a convention at once (a tombstone on the conventions topic): nothing more is delivered."""
    producer = make_producer(settings)
    try:
        producer.send(settings.conventions_topic, key=convention_id.encode(), value=None).get(timeout=30)
    finally:
        producer.close()


def conventions_of(settings: Settings, level: str, code: str) -> list[str]:
    """The ids of the published conventions of one authority (``commune``, ``69123``): its view reads
    their delivery topics. Ended and withdrawn conventions are left out."""
    return sorted(
        history.id
        for history in read_histories(settings).values()
        if (history.latest.authority.level, history.latest.authority.code) == (level, code)
        and history.latest.status != "ended"
    )
