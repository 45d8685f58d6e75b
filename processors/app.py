"""The faust-streaming adapter around the pipeline: raw topic in, delivery, audit and dead-letter topics out.

Records flow in batches (``take_events``): before each batch the worker catches up with the
conventions topic (so a convention published before an event was produced judges it), the batch is
processed by the pure pipeline, every output is handed to the producer without awaiting it, and
the batch's source offsets are acked only once all its outputs are acknowledged by the broker: no
loss, and no per-record round trip.

A second agent keeps the headcounts of aggregated conventions in two faust Tables (changelogs on
the broker) from the movements the pipeline writes to the aggregation topic. It takes one movement
at a time (a table write needs its source event) and awaits its outputs before moving on: those
movements are a small share of the traffic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import faust

from ..infra.health import Probes
from ..infra.kafka import REASON_HEADER
from ..infra.metrics import Metrics
from ..infra.settings import Settings
from ..schemas.codec import delivery_codec
from .aggregation import Movement, apply_movement, cell_delivery
from .delivery import millis
from .live import LiveConventions
from .pipeline import Output, Pipeline

log = logging.getLogger(__name__)

BATCH_SIZE = 2_000
BATCH_WITHIN_SECONDS = 0.05
SEND_TIMEOUT_SECONDS = 120.0


def create_app(
    settings: Settings,
    pipeline: Pipeline,
    conventions: LiveConventions,
    metrics: Metrics | None = None,
    probes: Probes | None = None,
) -> faust.App:
    """A faust app: one agent runs ``pipeline`` over the raw topic, one keeps the aggregated headcounts.

    ``metrics`` counts what it reads and writes; ``probes`` back its /livez and /readyz.
    """
    app = faust.App(
        f"{settings.topic_prefix}-processor",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(_data_dir(settings) / "{conf.name}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        broker_commit_every=BATCH_SIZE,
        # Short group timeouts: the embedded broker completes a join only when the rebalance
        # timeout runs out, and faust's defaults would delay every start by 30 s or more.
        broker_session_timeout=10.0,
        broker_rebalance_timeout=10.0,
        broker_heartbeat_interval=1.0,
        web_enabled=False,
    )
    raw = app.topic(settings.raw_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(raw, name="route-events")
    async def route_events(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_SECONDS):
            await conventions.catch_up()
            outputs: list[Output] = []
            stamps: list[float] = []
            for event in events:
                message = event.message
                origin = f"{message.topic}/{message.partition}/{message.offset}"
                produced = pipeline.process(message.value, message.key, origin)
                outputs.extend(produced)
                stamps.extend([message.timestamp] * len(produced))
            await _send_all(app, outputs, stamps)
            if metrics is not None:
                _observe(metrics, settings, settings.raw_topic, len(events), outputs)

    _aggregation_agent(app, settings, pipeline.topics.aggregation, metrics)
    _watch(app, metrics, probes or Probes())

    @app.task
    async def load_conventions() -> None:
        await conventions.catch_up()

    return app


def _data_dir(settings: Settings) -> Path:
    """Where faust keeps its local data: under the data directory, not the working directory."""
    path = settings.data_dir / "faust"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _aggregation_agent(app: faust.App, settings: Settings, topic_name: str, metrics: Metrics | None) -> None:
    movements = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    members = app.Table("aggregation-members", default=None, partitions=settings.partitions)
    cells = app.Table("aggregation-cells", default=None, partitions=settings.partitions)

    @app.agent(movements, name="aggregate-headcounts")
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            move = Movement.from_bytes(event.message.value)
            now = millis(dt.datetime.now(dt.UTC))
            outputs = [_cell_output(settings, move, cell, now) for cell in apply_movement(members, cells, move)]
            await _send_all(app, outputs)
            if metrics is not None:
                _observe(metrics, settings, topic_name, 1, outputs)


def _observe(metrics: Metrics, settings: Settings, source: str, consumed: int, outputs: list[Output]) -> None:
    """Count a batch: records read, deliveries by convention, dead letters by reason."""
    metrics.event_consumed(source, consumed)
    prefix = settings.delivery_topic("")
    conventions: Counter[str] = Counter()
    for output in outputs:
        if output.topic == settings.deadletter_topic:
            reason = dict(output.headers).get(REASON_HEADER, b"unknown").decode(errors="replace")
            metrics.dead_lettered("processor", reason)
        elif output.topic.startswith(prefix):
            conventions[output.topic.removeprefix(prefix)] += 1
    for convention, n in conventions.items():
        metrics.delivered(convention, n)


def _watch(app: faust.App, metrics: Metrics | None, probes: Probes) -> None:
    """Liveness: a timer beats while the event loop turns. Readiness: partitions assigned. Rebalances counted."""

    @app.on_partitions_assigned.connect
    async def assigned(_app: faust.App, _assigned: Any, **_kwargs: Any) -> None:
        probes.ready.set()
        if metrics is not None:
            metrics.rebalanced(app.conf.id)

    @app.timer(1.0)
    async def beat() -> None:
        probes.heartbeat.beat()


def _cell_output(settings: Settings, move: Movement, cell: Any, now: dt.datetime) -> Output:
    record = cell_delivery(move, cell, now)
    key = f"{move.school}|{cell.level}".encode()
    return Output(settings.delivery_topic(move.convention_id), key, delivery_codec().encode(record))


async def _send_all(app: faust.App, outputs: list[Output], stamps: list[float] | None = None) -> None:
    """Hand every output to the producer, then wait until the broker has acknowledged them all.

    ``stamps`` (seconds) become the records' timestamps: a delivery carries the time its source event
    entered the platform, from which the views measure end-to-end latency.
    """
    pending = [
        await app.producer.send(o.topic, o.key, o.value, partition=None, timestamp=ts, headers=o.headers)
        for o, ts in zip(outputs, stamps or [None] * len(outputs), strict=True)
    ]
    if pending:
        # A send that is never acknowledged (e.g. to a topic that does not exist) must crash the
        # worker, which then resumes from its last committed offsets, rather than stall it silently.
        await asyncio.wait_for(asyncio.gather(*pending), SEND_TIMEOUT_SECONDS)
