"""The faust-streaming adapter around the pipeline: raw topic in, delivery, audit and dead-letter topics out.

**Raw events: a bulk path inside the faust app.** ``RawBatches`` is a service of the app (started
and stopped with it) that owns an aiokafka consumer in the processor's group
(``Settings.processor_group_id``) and a producer. It takes up to ``MAX_RECORDS`` records per
``getmany``; before each batch it catches up with the conventions topic (so a convention published
before an event was produced judges it), runs the pure pipeline over the batch, puts every output
in one aiokafka batch per partition (``Outbox``; each stamped with its source record's Kafka
timestamp, from which the views measure latency), waits until the broker has acknowledged them all,
then commits exactly the batch's next offsets, partition by partition; that wait and commit go on
while the next batch is processed (``_Batches``). A rebalance waits for the batches in flight to be
acknowledged and committed before the partitions go (and a commit that still fails,
e.g. after the session expired, is dropped: the next owner redoes the batch; at-least-once, the
views dedupe by delivery id). Why: faust's per-record stream machinery took three quarters of a
worker's time (1,900 events/s against 7,500/s for the pure core). Measured A/B on the loaded 2-core
machine (one worker, 300 conventions, 20,000 events, alternated runs; medians): 1,230 events/s
against 600/s for the former agent, 360 µs of worker CPU per event against 520; the pure pipeline
is now 70 % of the worker's busy time. Through faust's producer instead of its own: 930/s, 390 µs.
One batch per partition instead of one ``send`` and future per output: 133 µs of worker CPU per
event against 180, 8,000 events/s against 5,650 (``scolaflux bench --only processor --runs 2``).

**Headcounts: the same owned pattern, state in a SQLite file per partition.** ``Headcounts`` is a
second service with its own aiokafka consumer in ``Settings.headcounts_group_id`` and its own
producer: it reads the movements the pipeline writes to the aggregation topic, folds them into the
partition's file under ``data_dir/headcounts`` (``HeadcountState``, one transaction per partition
and batch, with the offset it reaches), sends the last value of each cell whose published value changed in the
batch, waits for the acknowledgements and commits the batch's next offsets. The movements are the
log of that state: on taking a partition it reads the movements after the last one its file holds
up to the first offset it is given (the committed one), without sending anything (the fold is
idempotent and does not depend on the order; the cells of those movements were delivered before
their commit); a file that is not this log's is emptied and the partition read from its beginning.
Why not a faust agent with Tables: in faust 0.15.3 a worker restarted after kill -9 joins twice
while its Tables recover, acks records fetched for the first assignment, and after recovery drops
the re-fetched records as already read, so its commit offset never moves again (issue 8). The faust
app is only the worker's shell (``producer_only``: no faust consumer, group or changelog topics).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from mode import Service

from ..infra.health import Probes
from ..infra.kafka import FETCH_MAX_WAIT_MS, MAX_FRAME_BYTES, REASON_HEADER
from ..infra.kafka_auth import aiokafka_security, faust_credentials
from ..infra.metrics import PROCESSOR_STAGES, Metrics
from ..infra.settings import Settings
from ..schemas.codec import delivery_codec
from .aggregation import CellKey, CellValue, Movement, cell_delivery
from .headcount_state import HeadcountState
from .live import LiveConventions
from .pipeline import Output, Pipeline

log = logging.getLogger(__name__)

MAX_RECORDS = 5_000
"""Records per batch at most (one conventions catch-up, one gather of acknowledgements, one commit)."""
YIELD_EVERY = 250
"""Records processed between two turns of the event loop (a batch is CPU-bound: without turns, the
other service and the group heartbeats would wait for the whole batch)."""
POLL_TIMEOUT_MS = 200
"""How long ``getmany`` waits when nothing is there (the loop then checks whether to stop)."""
PARTITION_FETCH_BYTES = 1 << 20
"""Bytes a fetch may bring per partition (the broker still returns a larger first batch whole): what
the consumer prefetches is held beside the batch in work (8 MB a partition was up to 48 MB of raw
events for 6 partitions); 1 MB is still ~2,500 events a partition per fetch."""
GROUP_TIMEOUT_MS = 10_000
"""Session and rebalance timeouts: the embedded broker completes a join only when the rebalance
timeout runs out, so long ones would delay every start."""
SEND_TIMEOUT_SECONDS = 120.0


def create_app(
    settings: Settings,
    pipeline: Pipeline,
    conventions: LiveConventions,
    metrics: Metrics | None = None,
    probes: Probes | None = None,
) -> faust.App:
    """A faust app: a ``RawBatches`` service runs ``pipeline`` over the raw topic, ``Headcounts`` keeps the headcounts.

    ``metrics`` counts what it reads and writes; ``probes`` back its /livez and /readyz.
    """
    probes = probes or Probes()
    app = faust.App(
        settings.headcounts_group_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(_data_dir(settings) / "{conf.name}-data"),
        web_enabled=False,
        broker_credentials=faust_credentials(settings),
    )
    app.producer_only = True  # faust consumes nothing: no group, no tables, no changelogs
    app.boot_strategy = app.BootStrategy(app, enable_kafka=False)  # nor produces: the services own their clients
    app.add_dependency(RawBatches(settings, pipeline, conventions, metrics, probes, beacon=app.beacon))
    app.add_dependency(Headcounts(settings, pipeline.topics.aggregation, metrics, beacon=app.beacon))

    @app.timer(1.0)
    async def beat() -> None:  # liveness: the event loop turns
        probes.heartbeat.beat()

    return app


Settle = Callable[[], Awaitable[None]]
"""What is left of a batch once its outputs are sent: wait for their acknowledgements, commit."""


class _Batches(Service):
    """A topic in batches through an owned consumer. ``handle`` processes a batch and sends its
    outputs; the ``Settle`` it returns waits for their acknowledgements and commits the batch.

    A batch settles while the next one is fetched and processed: its outputs went out before the
    next batch's on the same producer, which keeps one request in flight per broker, so they reach
    each partition in order. The next batch starts settling only once the previous one has: commits
    stay in order, and none runs ahead of its batch's acknowledgements. The lock is held from a
    batch's processing to the previous batch's settling: a rebalance and the stop take it, then wait
    for the batch still settling.
    """

    def __init__(self, settings: Settings, metrics: Metrics | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings, self.metrics = settings, metrics
        self.consumer: AIOKafkaConsumer
        self.producer: AIOKafkaProducer
        self._batch = asyncio.Lock()  # held while a batch is in flight: a rebalance waits for it
        self._settling: asyncio.Future[None] | None = None  # the previous batch's acknowledgements and commit
        self.partitions: dict[str, list[int]] = {}  # each output topic's partitions (see ``Outbox``)

    async def on_stop(self) -> None:
        async with self._batch:  # the batch in flight is delivered and committed first
            await self.settled()
            await self.consumer.stop()  # leaves the group: the others take over at once
            await self.producer.stop()

    async def settled(self) -> None:
        """Wait until the batch settling, if any, is acknowledged and committed (raise what it raised).

        Shielded: a waiter cancelled (the service's task, at the stop) does not cancel the settling,
        which the stop then waits for."""
        if self._settling is not None:
            await asyncio.shield(self._settling)
            self._settling = None

    @Service.task
    async def _run(self) -> None:
        while not self.should_stop:
            try:
                batch = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)
            except ConsumerStoppedError:  # the service is stopping
                return
            if not batch or self.should_stop:
                await self.settled()  # an acknowledgement that failed stops the worker even when idle
                continue
            async with self._batch:  # no await between getmany and here: no rebalance in between
                settle = await self.handle(batch)
                await self.settled()
                self._settling = asyncio.ensure_future(settle())

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> Settle:
        raise NotImplementedError


class RawBatches(_Batches):
    """The raw topic in batches: process, send, gather the acknowledgements, commit (see the module)."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        conventions: LiveConventions,
        metrics: Metrics | None,
        probes: Probes,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, metrics, **kwargs)
        self.pipeline, self.conventions, self.probes = pipeline, conventions, probes

    async def on_start(self) -> None:
        # aiokafka clients belong to the running loop: made here, not in __init__
        settings = self.settings
        self.consumer = _batch_consumer(settings, settings.processor_group_id)
        self.producer = _batch_producer(settings)
        await self.producer.start()
        await self.conventions.catch_up()  # conventions known before the first event
        await self.consumer.start()
        # subscribed after start: the group join goes on in the background (the app starts meanwhile)
        self.consumer.subscribe([settings.raw_topic], listener=_Rebalance(self))

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> Settle:
        """One batch: route, send; then (settling) wait for every acknowledgement, commit the next
        offsets. Each stage is timed; the settling ones while the next batch is processed."""
        fetched, marks = time.time(), [time.perf_counter()]
        await self.conventions.catch_up()
        marks.append(time.perf_counter())
        records = [record for partition in batch.values() for record in partition]
        outbox = Outbox(self.producer, self.partitions)
        for start in range(0, len(records), YIELD_EVERY):
            for record in records[start : start + YIELD_EVERY]:
                origin = f"{record.topic}/{record.partition}/{record.offset}"
                for o in self.pipeline.process(record.value, record.key, origin):
                    await outbox.add(o, record.timestamp)
            await asyncio.sleep(0)  # let the loop turn: heartbeats, the headcounts, the sends
        await outbox.flush()
        marks.append(time.perf_counter())

        async def settle() -> None:
            await outbox.acknowledged()
            marks.append(time.perf_counter())
            await commit_owned(self.consumer, batch)
            marks.append(time.perf_counter())
            if self.metrics is not None:
                _observe(self.metrics, self.settings, self.settings.raw_topic, len(records), outbox)
                stamps = [p[0].timestamp for p in batch.values() if p[0].timestamp is not None and p[0].timestamp >= 0]
                oldest = fetched - min(stamps) / 1000 if stamps else None
                spans = [end - start for start, end in itertools.pairwise(marks)]
                self.metrics.processor_batch(oldest, zip(PROCESSOR_STAGES, spans, strict=True))

        return settle


class _Rebalance(ConsumerRebalanceListener):
    """Partitions go only once the batch in flight is committed; readiness and rebalances follow the group."""

    def __init__(self, service: RawBatches) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.service._batch:
            await self.service.settled()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.service.probes.ready.set()
        if self.service.metrics is not None:
            self.service.metrics.rebalanced(self.service.settings.processor_group_id)


class Headcounts(_Batches):
    """The aggregation topic in batches: fold the movements, send the changed cells, commit (see the module)."""

    def __init__(self, settings: Settings, topic: str, metrics: Metrics | None, **kwargs: Any) -> None:
        super().__init__(settings, metrics, **kwargs)
        self.topic = topic
        self.states: dict[TopicPartition, HeadcountState] = {}  # of the partitions owned
        self._last_ms = 0  # the last batch's delivery time (see ``_stamp``)

    async def on_start(self) -> None:
        self.consumer = _batch_consumer(self.settings, self.settings.headcounts_group_id)
        self.producer = _batch_producer(self.settings)
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=_HeadcountsRebalance(self))

    async def on_stop(self) -> None:
        await super().on_stop()
        for state in self.states.values():
            state.close()
        self.states.clear()

    async def handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> Settle:
        """One batch: apply each movement, send each changed cell's last value; then (settling) wait
        for the acknowledgements, commit.

        A cell changed by several movements of a batch is sent once, with its value after the batch
        (under the delivery id of the last movement that changed it): a view keeps a cell's newest
        value only, and at the rentrée a school's level changes with every enrolment of a batch.
        """
        outbox = Outbox(self.producer, self.partitions)
        changed: dict[CellKey, tuple[Movement, CellValue]] = {}
        for tp, records in batch.items():
            state = self.states.get(tp)
            if state is None:  # a partition just taken: its state up to where it resumes
                state = self.states[tp] = await self._take(tp, records[0].offset)
            with state.transaction():  # the partition's part of the batch, a chunk at a time
                for start in range(0, len(records), YIELD_EVERY):
                    state.fold(records[start : start + YIELD_EVERY], changed)
                    await asyncio.sleep(0)
        stamp = self._stamp()
        for move, cell in changed.values():
            await outbox.add(_cell_output(self.settings, move, cell, stamp))
        await outbox.flush()

        async def settle() -> None:
            await outbox.acknowledged()
            await commit_owned(self.consumer, batch)
            if self.metrics is not None:
                _observe(self.metrics, self.settings, self.topic, sum(map(len, batch.values())), outbox)

        return settle

    def _stamp(self) -> dt.datetime:
        """The delivery time of a batch's cells: the wall clock, a millisecond after the last batch's
        at least.

        A view keeps each cell's newest delivery by (delivered_at, delivery_id). A batch sends each
        cell once, so its cells share one time, which runs ahead of the clock only if batches end
        less than a millisecond apart. A cell's updates all come from one partition, so from one
        worker at a time, and a worker taking a partition over stamps its cells after its
        predecessor's as long as their clocks agree to within the takeover (10 s at least). (A time
        per cell, a millisecond apart, ran a second ahead of the clock for every 1,000 cells sent
        faster than that, which a successor's first cells could then rank below.)
        """
        self._last_ms = max(time.time_ns() // 1_000_000, self._last_ms + 1)
        return dt.datetime.fromtimestamp(self._last_ms / 1000, dt.UTC)

    async def _take(self, tp: TopicPartition, end: int) -> HeadcountState:
        """A partition's state on disk, brought up to ``end`` with the movements after the last one it
        holds; nothing is sent. A file whose last movement is not in the log is emptied first and the
        partition read from its beginning (see ``headcount_state``)."""
        state = HeadcountState(self.settings.data_dir / "headcounts" / f"{tp.topic}-{tp.partition}.sqlite")
        reader = _batch_consumer(self.settings, None)  # outside any group
        await reader.start()
        try:
            reader.assign([tp])
            resume = state.next_offset
            if resume:
                reader.seek(tp, resume - 1)  # its last movement, to check that the file folds this log
            else:
                await reader.seek_to_beginning(tp)
            checked, read = not resume, 0
            while not checked or await reader.position(tp) < end:
                records = (await reader.getmany(tp, timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS)).get(tp, [])
                if not checked:
                    shown = reader.highwater(tp)  # the log's end, once a fetch has answered
                    if not records and (shown is None or shown >= resume):
                        continue  # the last movement is there, not fetched yet
                    checked = True
                    if records and state.follows(records[0]):
                        records = records[1:]
                    else:
                        log.warning("headcount state of %s/%d is not this log's: rebuilt from its beginning", *tp)
                        state.clear()
                        resume = 0
                        await reader.seek_to_beginning(tp)
                        continue
                before_end = [r for r in records if r.offset < end]
                state.fold(before_end, {})
                read += len(before_end)
                await asyncio.sleep(0)
            log.info("headcounts of %s/%d taken at offset %d: file up to %d, %d movements read", *tp, end, resume, read)
        except BaseException:
            state.close()
            raise
        finally:
            await reader.stop()
        return state


class _HeadcountsRebalance(ConsumerRebalanceListener):
    """A partition's state goes with it, once the batch in flight is committed."""

    def __init__(self, service: Headcounts) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.service._batch:
            await self.service.settled()
            for tp in revoked:
                if (state := self.service.states.pop(tp, None)) is not None:
                    state.close()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self.service.metrics is not None:
            self.service.metrics.rebalanced(self.service.settings.headcounts_group_id)


def _batch_consumer(settings: Settings, group_id: str | None) -> AIOKafkaConsumer:
    """A consumer in ``group_id`` (None: outside any group) that commits by hand (aiokafka clients
    belong to the running loop)."""
    return AIOKafkaConsumer(
        **aiokafka_security(settings),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        session_timeout_ms=GROUP_TIMEOUT_MS,
        rebalance_timeout_ms=GROUP_TIMEOUT_MS,
        heartbeat_interval_ms=1_000,
    )


def _batch_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **aiokafka_security(settings),
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.idempotent_producers,
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=MAX_FRAME_BYTES // 8,
    )


class Outbox:
    """A batch's outputs in one aiokafka batch per partition (``create_batch``/``send_batch``), then
    the acknowledgement of them all.

    Why: ``producer.send`` makes a coroutine, a partition lookup and a future per record, and the
    acknowledgements were gathered one future each (~45 µs of worker CPU per event). Records keep
    their order within a partition and the partition of the default partitioner (murmur2 of the
    key), so consumers see what ``send`` gave them. A topic's partitions are read once per worker
    (``partitions``): a topic given more partitions later is written to the old ones until a restart.
    """

    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, list[int]]) -> None:
        self.producer, self.partitions = producer, partitions
        self.open: dict[tuple[str, int], Any] = {}
        self.keyed: dict[tuple[str, bytes], int] = {}
        self.sent: list[Awaitable[Any]] = []
        # for the metrics, rather than keeping every output of a batch: outputs by topic, and the
        # few with headers (dead letters, whose reason is in them)
        self.written: Counter[str] = Counter()
        self.headed: list[Output] = []

    async def add(self, o: Output, timestamp_ms: int | None = None) -> None:
        """Add an output to its partition's batch (a full batch goes at once)."""
        self.written[o.topic] += 1
        if o.headers:
            self.headed.append(o)
        partitions = self.partitions.get(o.topic)
        if partitions is None:
            partitions = self.partitions[o.topic] = sorted(await self.producer.partitions_for(o.topic))
        partition = self._partition(o.topic, o.key, partitions)
        batch = self.open.get((o.topic, partition))
        if batch is None:
            batch = self.open[o.topic, partition] = self.producer.create_batch()
        if batch.append(key=o.key, value=o.value, timestamp=timestamp_ms, headers=o.headers) is None:
            self.sent.append(await self.producer.send_batch(batch, o.topic, partition=partition))
            batch = self.open[o.topic, partition] = self.producer.create_batch()
            if batch.append(key=o.key, value=o.value, timestamp=timestamp_ms, headers=o.headers) is None:
                raise ValueError(f"an output to {o.topic} is larger than a batch ({len(o.value):,} bytes)")

    def _partition(self, topic: str, key: bytes | None, partitions: list[int]) -> int:
        """The default partitioner's choice, hashed once per topic and key in a batch (an event's
        audit records share their key) and not at all for a topic of one partition."""
        if len(partitions) == 1:
            return partitions[0]
        if key is None:
            return _PARTITIONER(key, partitions, partitions)
        partition = self.keyed.get((topic, key))
        if partition is None:
            partition = self.keyed[topic, key] = _PARTITIONER(key, partitions, partitions)
        return partition

    async def flush(self) -> None:
        """Send the batches still open."""
        for (topic, partition), batch in self.open.items():
            self.sent.append(await self.producer.send_batch(batch, topic, partition=partition))
        self.open.clear()

    async def acknowledged(self) -> None:
        """Send the batches still open and wait until the broker has acknowledged every one."""
        await self.flush()
        await acknowledged(self.sent)


_PARTITIONER = DefaultPartitioner()


async def commit_owned(consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    """Commit a delivered batch (each partition's next offset), for the partitions this worker still owns."""
    owned = consumer.assignment()
    mine = {tp: records[-1].offset + 1 for tp, records in batch.items() if tp in owned}
    if not mine:
        return
    try:
        await consumer.commit(mine)
    except (CommitFailedError, IllegalStateError) as error:
        # The group moved on (e.g. this worker was too slow and was dropped): the new owner
        # resumes from the last commit and writes the same outputs again, with the same ids.
        log.warning("batch delivered but not committed (%s): its partitions' next owner redoes it", error)


async def acknowledged(pending: Sequence[Awaitable[Any]]) -> None:
    """Wait until the broker has acknowledged every send.

    A send that is never acknowledged (e.g. to a topic that does not exist) must crash the worker,
    which then resumes from its last committed offsets, rather than stall it silently.
    """
    if pending:
        await asyncio.wait_for(asyncio.gather(*pending), SEND_TIMEOUT_SECONDS)


def _data_dir(settings: Settings) -> Path:
    """Where faust keeps its local data: under the data directory, not the working directory."""
    path = settings.data_dir / "faust"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _observe(metrics: Metrics, settings: Settings, source: str, consumed: int, outbox: Outbox) -> None:
    """Count a batch: records read, deliveries by convention, dead letters by reason."""
    metrics.event_consumed(source, consumed)
    prefix = settings.delivery_topic("")
    for output in outbox.headed:
        if output.topic == settings.deadletter_topic:
            reason = dict(output.headers).get(REASON_HEADER, b"unknown").decode(errors="replace")
            metrics.dead_lettered("processor", reason)
    for topic, n in outbox.written.items():
        if topic.startswith(prefix):
            metrics.delivered(topic.removeprefix(prefix), n)


def _cell_output(settings: Settings, move: Movement, cell: Any, now: dt.datetime) -> Output:
    record = cell_delivery(move, cell, now)
    key = f"{move.school}|{cell.level}".encode()
    return Output(settings.delivery_topic(move.convention_id), key, delivery_codec().encode(record))
