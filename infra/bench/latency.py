"""End-to-end latency: from an event's production to the update of the views it reaches.

Events are written at a steady rate, each with its recording time (``recorded_at``) set to the
moment it is produced; the views of a few authorities (a commune, its département, its région),
each on its own delivery topic and its own SQLite database as deployed, apply what they receive
with the views' own maintainer (``ViewMaintainer``: its reader, batches and commits). The latency
of a delivery is the time from that production to the commit of the view transaction that applied
it, split at the delivery's ``delivered_at`` (the processor's clock when its pipeline made it): the
way in (broker, wait for the worker's batch) and the way out (the rest of the batch, the broker,
the view). The worker's own /metrics say where its batches spend their time.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from ...consumers.runner import ViewMaintainer, partitions_of
from ...consumers.store import BatchOutcome, Record, make_engine, view_url
from ...consumers.views import AuthorityView
from ...producers.kafka import producer_config
from ...producers.simulator import Record as EventRecord
from ...producers.simulator import avro_datum
from ...schemas.codec import event_codec
from ..kafka import TopicSpec, ensure_topics
from ..settings import Settings
from .records import reader


@dataclass
class Latencies:
    """Per delivery, in seconds: from production to the view's commit, and the two parts either side
    of the processor's pipeline (the delivery's ``delivered_at``)."""

    total: list[float] = field(default_factory=list)
    way_in: list[float] = field(default_factory=list)
    way_out: list[float] = field(default_factory=list)

    def extend(self, other: Latencies) -> None:
        """Add another's latencies to these."""
        self.total += other.total
        self.way_in += other.way_in
        self.way_out += other.way_out


@dataclass
class Follower:
    """A view applying one authority's delivery topics in a process of its own, as deployed (not a
    thread of the benchmark, whose producer would hold the same interpreter lock), noting each
    delivery's latency."""

    settings: Settings
    topics: Sequence[str]
    database: Path
    since: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    latencies: Latencies = field(default_factory=Latencies)
    error: str | None = None
    _process: Any = None
    _stop: Any = None
    _ready: Any = None
    _count: Any = None
    _results: Any = None

    def start(self) -> Follower:
        """Start following (from the topics' start; only deliveries recorded after ``since`` count)."""
        context = multiprocessing.get_context("spawn")  # no fork of the benchmark's librdkafka threads
        self._stop, self._ready, self._count, self._results = (
            context.Event(),
            context.Event(),
            context.Value("q", 0),
            context.Queue(),
        )
        arguments = (self.settings, list(self.topics), self.database, self.since)
        channels = (self._stop, self._ready, self._count, self._results)
        self._process = context.Process(target=_follow, args=(*arguments, *channels), name="bench-view", daemon=True)
        self._process.start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the view reads its topics (a process takes a second or two to start)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.failed():
                self.stop()
                raise RuntimeError(self.error or "a view follower ended before it read its topics")
            if time.monotonic() > deadline:
                raise TimeoutError(f"a view follower was not reading within {timeout:.0f}s")

    @property
    def pid(self) -> int:
        """The view's process id."""
        return self._process.pid

    def applied(self) -> int:
        """How many deliveries recorded from ``since`` on it has applied so far."""
        return self._count.value

    def failed(self) -> bool:
        """Whether the process ended before it was told to stop."""
        return not self._process.is_alive() and not self._stop.is_set()

    def stop(self) -> None:
        """Stop it (once); its latencies (or the reason it failed) come back."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            outcome = self._results.get(timeout=60)
        finally:
            self._process.join(30)
        if isinstance(outcome, str):
            self.error = outcome
        else:
            self.latencies = outcome


def _follow(
    settings: Settings,
    topics: list[str],
    database: Path,
    since: dt.datetime,
    stop: Any,
    ready: Any,
    count: Any,
    results: Any,
) -> None:
    """A ``Follower``'s process: apply until ``stop``, then put the latencies (or why it failed) on ``results``."""
    latencies = Latencies()
    try:
        engine = make_engine(view_url(None, database.parent, database.stem))
        maintainer = _Timed(settings, topics, AuthorityView(None), engine, since=since, into=latencies)
        consumer = maintainer.open_consumer()
        ready.set()
        try:
            while not stop.is_set():
                maintainer.poll_once(consumer)
                count.value = len(latencies.total)
        finally:
            consumer.close()
            engine.dispose()
    except BaseException as exc:
        results.put(f"a view follower failed: {exc!r}")
        return
    results.put(latencies)


class _Timed(ViewMaintainer):
    """A view maintainer, as deployed, that notes the latency of each delivery it applies: from the
    event's recording (its production here) to the commit of the transaction that applied it."""

    def __init__(self, *args: Any, since: dt.datetime, into: Latencies, **kwargs: Any) -> None:
        """Latencies of deliveries recorded from ``since`` on go ``into`` the given lists."""
        super().__init__(*args, **kwargs)
        self.since, self.latencies = since, into

    def _account(self, outcome: BatchOutcome, records: list[Record]) -> None:
        now = dt.datetime.now(dt.UTC)  # apply_batch has committed
        super()._account(outcome, records)
        for item in outcome.applied:
            if item.recorded_at >= self.since:
                self.latencies.way_in.append((item.delivered_at - item.recorded_at).total_seconds())
                self.latencies.way_out.append((now - item.delivered_at).total_seconds())
                self.latencies.total.append((now - item.recorded_at).total_seconds())


def event_producer(settings: Settings) -> Producer:
    """A producer with the feed's event producer settings (``producers.kafka.producer_config``).

    Make it before the measure: an idempotent producer first asks the broker for its id, and the
    events of its first half second waited for it (p99 of the way in 0.41 - 0.46 s, not 0.13 - 0.16).
    """
    return Producer(producer_config(settings))


def paced_produce(producer: Producer, topic: str, records: Iterator[EventRecord], rate: float, seconds: float) -> int:
    """Produce events at ``rate`` per second for ``seconds``, each recorded at its production time."""
    codec = event_codec()

    def event() -> tuple[bytes, bytes]:
        record = next(records)
        record = {**record, "recorded_at": max(dt.datetime.now(dt.UTC), record["event_time"])}
        return record["pupil"]["ine"].encode(), codec.encode(avro_datum(record))

    return _paced(producer, topic, event, rate, seconds)


def _paced(
    producer: Producer, topic: str, make: Callable[[], tuple[bytes | None, bytes]], rate: float, seconds: float
) -> int:
    """Produce ``make()``'s key and value, made at the moment of sending, at ``rate`` per second for
    ``seconds``; how many were sent once all are acknowledged."""
    started = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            key, value = make()
            producer.produce(topic, value, key)
            sent += 1
        producer.poll(0)
        time.sleep(0.001)
    if producer.flush(60):
        raise RuntimeError(f"records to {topic} not acknowledged within 60 s")
    return sent


HOP_VALUE_SIZE = 300


def broker_hop(settings: Settings, rate: float, seconds: float, timeout: float = 60.0) -> list[float]:
    """The broker's own latency, the reference for the feed's: records of 300 bytes produced at
    ``rate`` for ``seconds`` with the feed's event producer settings to a fresh topic of the raw
    topic's partitions, read by a consumer outside any group whose fetches wait at most 10 ms (the
    worker's waited as long until the ninth session, 50 ms since: ``FETCH_MAX_WAIT_MS``); each
    record's seconds from its production to its reading."""
    assert settings.kafka_bootstrap is not None
    topic = f"{settings.topic_prefix}.hop"
    ensure_topics(settings, [TopicSpec(topic, settings.partitions)])
    producer = event_producer(settings)
    consumer = reader(settings.kafka_bootstrap)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic)])
    latencies: list[float] = []
    stop = threading.Event()
    reading = threading.Thread(target=_read_hops, args=(consumer, latencies, stop), name="bench-hop", daemon=True)
    reading.start()
    try:
        producer.produce(topic, b"")  # not timed: the idempotent producer gets its id first
        if producer.flush(30):
            raise RuntimeError(f"the first record to {topic} not acknowledged within 30 s")
        padding = bytes(HOP_VALUE_SIZE - 8)
        sent = _paced(producer, topic, lambda: (None, struct.pack("d", time.time()) + padding), rate, seconds)
        deadline = time.monotonic() + timeout
        while len(latencies) < sent and reading.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        reading.join(timeout)
        consumer.close()
    if len(latencies) < sent:
        raise TimeoutError(f"{len(latencies)} of {sent} records read within {timeout:.0f}s")
    return latencies


def _read_hops(consumer: Consumer, into: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        first = consumer.poll(0.1)  # as the views read: the first record, then what is already there
        if first is None:
            continue
        for message in [first, *consumer.consume(num_messages=10_000, timeout=0)]:
            if message.error() is not None:
                raise KafkaException(message.error())
            if message.value():
                into.append(time.time() - struct.unpack_from("d", message.value())[0])


def batch_times(metrics_url: str) -> dict[str, tuple[float, int]]:
    """A processor worker's batch figures so far, from its /metrics: for each stage (and for
    ``fetched age``, the age of a batch's oldest event when fetched), total seconds and batches."""
    text = httpx.get(metrics_url, timeout=10).text
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("scolaflux_processor_"):
                what = sample.labels.get("stage", "fetched age")
                if sample.name.endswith("_sum"):
                    sums[what] = sample.value
                elif sample.name.endswith("_count"):
                    counts[what] = int(sample.value)
    return {what: (sums[what], counts[what]) for what in sums.keys() & counts.keys()}


def mean_since(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]]) -> dict[str, float]:
    """The mean seconds per batch of each figure of ``batch_times`` between two readings."""
    means = {}
    for what, (total, count) in after.items():
        total_before, count_before = before.get(what, (0.0, 0))
        if count > count_before:
            means[what] = (total - total_before) / (count - count_before)
    return means


def percentiles(latencies: Sequence[float]) -> tuple[float, float]:
    """The median and the 99th percentile."""
    if len(latencies) < 2:
        raise ValueError(f"{len(latencies)} latencies measured: too few for percentiles")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[98]
