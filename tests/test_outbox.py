"""The processor's Outbox writes each output where ``producer.send`` would: its key's partition under
the default (Java-compatible murmur2) partitioner, in the order added, on a real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from aiokafka.partitioner import DefaultPartitioner
from scolaflux.infra.kafka import TopicSpec, ensure_topics
from scolaflux.infra.settings import Settings
from scolaflux.processors.app import Outbox, _batch_producer
from scolaflux.processors.pipeline import Output

from .conftest import read_topic


def test_outbox_keeps_the_default_partitioners_choice_and_the_order(settings: Settings) -> None:
    spread, single = settings.delivery_topic("outbox-3"), settings.delivery_topic("outbox-1")
    ensure_topics(settings, [TopicSpec(spread, 3), TopicSpec(single, 1)])
    # keys repeat (an event's audit records share theirs): the memo must give the same partitions
    keys = [f"pupil-{i % 17:02d}".encode() for i in range(120)]

    async def send() -> None:
        producer = _batch_producer(settings)
        await producer.start()
        try:
            outbox = Outbox(producer, {})
            for n, key in enumerate(keys):
                await outbox.add(Output(spread, key, b"%d" % n))
                await outbox.add(Output(single, key, b"%d" % n))
            await outbox.acknowledged()
        finally:
            await producer.stop()

    asyncio.run(send())

    partitioner = DefaultPartitioner()
    written = read_topic(settings, spread, len(keys))
    assert len(written) == len(keys)
    assert {(r.key, r.partition) for r in written} == {(k, partitioner(k, [0, 1, 2], [0, 1, 2])) for k in keys}
    assert len({r.partition for r in written}) == 3
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in sorted(written, key=lambda r: (r.partition, r.offset)):
        by_partition[record.partition].append(int(record.value))
    assert all(values == sorted(values) for values in by_partition.values())
    assert [int(r.value) for r in read_topic(settings, single, len(keys))] == list(range(len(keys)))
