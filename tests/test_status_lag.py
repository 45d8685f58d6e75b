"""The lag reader on the real broker: committed offsets, log ends, the age of the oldest unconsumed
record, discovery of the deployment's groups, and the dead-letter reasons of a window."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from scolaflux.infra.kafka import REASON_HEADER, TopicSpec, ensure_topics, make_producer, pipeline_topics
from scolaflux.infra.lag import LagReader, Target
from scolaflux.infra.settings import Settings
from scolaflux.infra.status import Sampler

from tests.conftest import read_topic

pytestmark = pytest.mark.broker

AUTHORITY = "commune:69123"


def commit(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit offsets under ``group`` the way a view maintainer does (assigned, no group join)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
    finally:
        consumer.close(autocommit=False)


def test_lag_counts_every_record_and_ages_the_oldest_unconsumed_one(settings: Settings) -> None:
    assert settings.kafka_bootstrap
    topic, other = settings.delivery_topic("c1"), settings.delivery_topic("c2")
    ensure_topics(settings, [*pipeline_topics(settings), TopicSpec(topic, 3), TopicSpec(other, 3)])
    producer = make_producer(settings, linger_ms=50)  # batches of many records: Tansu's ListOffsets under-counts them
    for n in range(60):
        producer.send(topic, key=f"k{n}".encode(), value=b"delivery")
    producer.send(settings.deadletter_topic, value=b"x", headers=[(REASON_HEADER, b"decode")])
    producer.flush()
    records = read_topic(settings, topic, 60)
    ends = {p: 1 + max(r.offset for r in records if r.partition == p) for p in range(3)}
    times = {(r.partition, r.offset): r.timestamp / 1000 for r in records}
    assert sum(ends.values()) == 60
    group = settings.view_group_id(AUTHORITY)
    commit(settings, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): ends[1]})  # 2 not committed

    with LagReader(settings) as reader:
        assert group in reader.groups()
        assert reader.commits([group], [topic, other]) == {group: {topic}}
        samples = reader.sample(Target(group, topic, "view", AUTHORITY))
        assert {p: s.end for p, s in samples.items()} == ends, "log ends from the fetch, not from ListOffsets"
        assert samples[0].committed == 2 and samples[0].lag == ends[0] - 2
        assert samples[0].oldest_unconsumed == times[(0, 2)]
        assert samples[0].lag_seconds is not None and samples[0].lag_seconds >= 0
        assert samples[1].lag == 0 and samples[1].lag_seconds == 0.0
        assert samples[2].committed == 0 and samples[2].lag == ends[2], "never committed: from the beginning"

        sampler = Sampler(settings, reader, max_samples=3)
        sampler.sample()
        producer.send(settings.deadletter_topic, value=b"y", headers=[(REASON_HEADER, b"invalid")])
        producer.send(settings.deadletter_topic, value=b"z", headers=[(REASON_HEADER, b"invalid")])
        producer.flush()
        sampler.sample()
        report = sampler.report()
    producer.close()
    (view,) = report.groups
    assert (view.group, view.role, view.authority) == (group, "view", AUTHORITY)
    assert view.lag == (ends[0] - 2) + ends[2] and view.status == "STOPPED"
    assert report.unconsumed_topics == [other]
    assert report.missing_groups == [settings.processor_group_id]
    assert (report.rejects.total, report.rejects.in_window, report.rejects.reasons) == (3, 2, {"invalid": 2})
