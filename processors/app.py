"""The faust-streaming adapter around the pipeline: raw topic in, delivery and dead-letter topics out.

Records flow in batches (``take_events``): each batch is processed by the pure pipeline, every
output is handed to the producer without awaiting it, and the batch's source offsets are acked
only once all its outputs are acknowledged by the broker: no loss, and no per-record round trip.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from ..infra.settings import Settings
from .pipeline import Output, Pipeline

log = logging.getLogger(__name__)

BATCH_SIZE = 2_000
BATCH_WITHIN_SECONDS = 0.05


def create_app(settings: Settings, pipeline: Pipeline) -> faust.App:
    """A faust app whose one agent runs ``pipeline`` over the raw topic."""
    app = faust.App(
        f"{settings.topic_prefix}-processor",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        broker_commit_every=BATCH_SIZE,
        web_enabled=False,
    )
    raw = app.topic(settings.raw_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(raw, name="route-events")
    async def route_events(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_SECONDS):
            outputs: list[Output] = []
            for event in events:
                message = event.message
                origin = f"{message.topic}/{message.partition}/{message.offset}"
                outputs.extend(pipeline.process(message.value, message.key, origin))
            await _send_all(app, outputs)

    return app


async def _send_all(app: faust.App, outputs: list[Output]) -> None:
    """Hand every output to the producer, then wait until the broker has acknowledged them all."""
    pending = [
        await app.producer.send(o.topic, o.key, o.value, partition=None, timestamp=None, headers=o.headers)
        for o in outputs
    ]
    if pending:
        await asyncio.gather(*pending)
