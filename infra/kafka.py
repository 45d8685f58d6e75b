"""Thin kafka-python adapters: topics, producers, consumers, dead-letter records."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from ..schemas.errors import RejectedInput
from .kafka_auth import kafka_python_security
from .settings import Settings

REASON_HEADER = "scolaflux.reason"
ERROR_HEADER = "scolaflux.error"
ORIGIN_HEADER = "scolaflux.origin"
MAX_FRAME_BYTES = 64 * 2**20
"""kafka-python 2.3 refuses network frames over 1 MB by default; a fetch of several partitions, or
the metadata of thousands of convention topics, answers more than that: every client allows 64 MB."""
FETCH_MAX_WAIT_MS = 50
"""How long a processor's fetch may wait for records (raw topic, movements, conventions). The
embedded broker holds a fetch for part of its maximum wait even when records are there: 500 ms gave
a p50 of 133 ms per hop, 10 ms gives 9 ms. A broker answers a connection's requests in order, so a
ListOffsets on the connection of a fetch in flight waits behind it (with aiokafka's default 500 ms,
every batch waited 300-500 ms for the conventions' catch-up: p50 latency 1.3 s; their reader is now
paused between catch-ups). 50 rather than 10 (ninth session, `scolaflux bench --only latency`, 3
runs each): at 2,000 events/s the same latency (p99 139 against 129 ms, within the spread) for 9 %
less worker CPU an event (273 against 300 µs) and 151 against 166 % of the 2 cores busy; at 50
events/s p50 52 against 43 ms, p99 80 against 62 ms; an idle worker 1.9 % of a core, its broker
3.3 %, against 7.5 and 9.8 % (each consumer of a worker fetched up to 100 times a second)."""
VIEW_FETCH_WAIT_MS = 50
"""How long a view's fetch may wait for records. On Apache Kafka a fetch returns as soon as records
are there; the embedded broker holds it for part of this wait anyway. Measured per hop (produce to
poll, 20 records/s): p50 136 ms / p99 258 ms with kafka-python's default 500, 4 / 30-36 ms with 50,
5 / 12-22 ms with 10; an idle view then costs 2.6 % of a core (and the broker 3.7 %) with 50,
9 % (and 9 %) with 10, under 1 % with 500 (all with kafka-python). The views now read with
librdkafka (``consumers/runner.py``), at 50 ms: 6-7 / 15-16 ms from produce to the applied
commit, an idle view 0.3 % of a core."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions, configs (e.g. ``cleanup.policy=compact``) and replicas
    (``Settings.replication_factor``)."""

    name: str
    partitions: int = 1
    configs: dict[str, str] = field(default_factory=dict)
    replication: int = 1


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """The topics every deployment has, whatever its conventions."""
    replicas = settings.replication_factor
    return [
        TopicSpec(settings.raw_topic, settings.partitions, replication=replicas),
        TopicSpec(settings.deadletter_topic, 1, replication=replicas),
        TopicSpec(settings.audit_topic, settings.partitions, replication=replicas),
        TopicSpec(settings.conventions_topic, 1, {"cleanup.policy": "compact"}, replicas),
    ]


def delivery_topics(settings: Settings, convention_ids: Iterable[str]) -> list[TopicSpec]:
    """The delivery topics of some conventions."""
    return [
        TopicSpec(settings.delivery_topic(c), settings.delivery_partitions, replication=settings.replication_factor)
        for c in convention_ids
    ]


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec]) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    (kafka-python 2.3's admin ``list_topics`` cannot parse Tansu's authorised-operations field,
    so existence is learnt from the creation's answer.)
    """
    admin = make_admin(settings)
    try:
        for spec in specs:  # one at a time: an existing topic must not fail the others
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=spec.configs)]
                )
    finally:
        admin.close()


def make_admin(settings: Settings, **overrides: object) -> KafkaAdminClient:
    """An admin client of the settings' cluster, with their security."""
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "receive_message_max_bytes": MAX_FRAME_BYTES,
        **kafka_python_security(settings),
    }
    config.update(overrides)
    return KafkaAdminClient(**config)


def make_producer(settings: Settings, **overrides: object) -> KafkaProducer:
    """An acknowledged producer: acks=all, retries, one request in flight so order survives a retry.

    With idempotence (a real cluster) a retried batch is never written twice; without it (the
    embedded broker) a retry may duplicate, and every consumer applies events idempotently by id.
    """
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "retries": 2_147_483_647,
        "max_in_flight_requests_per_connection": 1,
        "enable_idempotence": settings.idempotent_producers,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "delivery_timeout_ms": 300_000,
        "request_timeout_ms": 10_000,
        "receive_message_max_bytes": MAX_FRAME_BYTES,
        **kafka_python_security(settings),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(
    settings: Settings, group_id: str | None, topics: Sequence[str] = (), **overrides: object
) -> KafkaConsumer:
    """A consumer that commits only what its caller says it has applied."""
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_records": 5_000,
        "receive_message_max_bytes": MAX_FRAME_BYTES,
        **kafka_python_security(settings),
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def deadletter_headers(error: RejectedInput, origin: str) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: the reason category, the message and where it came from.

    Error messages never carry a pupil identifier (validators name the rule, not the value).
    """
    return [
        (REASON_HEADER, error.reason.encode()),
        (ERROR_HEADER, str(error).encode()),
        (ORIGIN_HEADER, origin.encode()),
    ]
