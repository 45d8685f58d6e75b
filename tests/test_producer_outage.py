"""A broker outage while producing: the broker process is frozen (SIGSTOP) for 20 s mid-stream,
then resumed. Every event must arrive exactly once, each pupil's events in the order sent.

The test runs its own embedded broker, so that freezing it disturbs no other test.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from scolaflux.infra.broker import EmbeddedBroker
from scolaflux.infra.kafka import TopicSpec, ensure_topics, make_consumer
from scolaflux.infra.settings import Settings
from scolaflux.infra.topics import assign_all
from scolaflux.producers.kafka import EventProducer
from scolaflux.producers.simulator import Simulator
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.validation import parse_event

pytestmark = pytest.mark.broker

OUTAGE_SECONDS = 20.0


def test_a_20s_broker_freeze_loses_duplicates_and_reorders_nothing(tmp_path: Path) -> None:
    simulator = Simulator(load_geography(["69"]), ["69123", "69266"], seed=42, pupils_per_commune=1500, days=45)
    records = list(simulator.records())
    assert len(records) > 5_000
    third = len(records) // 3
    with EmbeddedBroker(tmp_path / "broker.log") as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="outage", partitions=3, data_dir=tmp_path)
        ensure_topics(settings, [TopicSpec(settings.raw_topic, 3)])
        with EventProducer(settings) as producer:
            for record in records[:third]:
                producer.send_record(record, validate=False)
            producer.flush()  # the first third is in; the outage strikes while the rest is in flight
            for record in records[third : 2 * third]:
                producer.send_record(record, validate=False)
            paused, resumed = threading.Event(), threading.Event()
            outage = threading.Thread(target=_freeze, args=(broker, paused, resumed))
            outage.start()
            try:
                assert paused.wait(10)
                for record in records[2 * third :]:  # sent while the broker is frozen
                    producer.send_record(record, validate=False)
                assert not resumed.is_set()
                producer.flush()
            finally:
                outage.join()
        assert resumed.is_set()
        got = read_all(settings, settings.raw_topic)

    events = [parse_event(r.value) for r in got]
    ids = Counter(str(e.event_id) for e in events)
    assert [i for i, n in ids.items() if n > 1] == [], "some events were written twice"
    assert set(ids) == {r["event_id"] for r in records}, "some events were lost"
    received: dict[str, list[str]] = defaultdict(list)
    for partition_records in _by_partition(got).values():
        for record in partition_records:
            event = parse_event(record.value)
            received[event.pupil.ine].append(str(event.event_id))
    expected: dict[str, list[str]] = defaultdict(list)
    for record in records:
        expected[record["pupil"]["ine"]].append(record["event_id"])
    assert received == expected, "a pupil's events arrived out of order"


def _freeze(broker: EmbeddedBroker, paused: threading.Event, resumed: threading.Event) -> None:
    broker.pause()
    paused.set()
    threading.Event().wait(OUTAGE_SECONDS)  # the outage itself lasts 20 s: that is the scenario, not a wait
    broker.resume()
    resumed.set()


def read_all(settings: Settings, topic: str) -> list:
    """Every record of a topic, up to its end offsets as they are now."""
    consumer = make_consumer(settings, None)
    try:
        partitions = assign_all(consumer, topic)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list = []
        while any(consumer.position(p) < ends[p] for p in partitions):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _by_partition(records: list) -> dict[int, list]:
    out: dict[int, list] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[record.partition].append(record)
    return out
