"""Figures of the processor's pure core, without a broker: the pipeline per event.

The events are the simulator's (the rentrée wave first) over the communes of the conventions'
académies, encoded as the producers encode them.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ...processors.conventions import Convention
from ...processors.history import ConventionHistory
from ...processors.pipeline import Pipeline
from ...processors.routing import ConventionIndex
from ...processors.wiring import build_pipeline, master_key
from ...producers.simulator import SCHOOL_AGE_SHARE, Simulator, avro_datum
from ...schemas.codec import Codec, event_codec
from ...schemas.geography import Geography
from ..settings import Settings
from .records import Record


def index_of(conventions: Iterable[Convention], settings: Settings) -> ConventionIndex:
    """The routing index of some conventions (each a first version), keyed as the processor keys them."""
    return ConventionIndex.build([ConventionHistory.first(c) for c in conventions], master_key(settings))


def simulated_events(
    geography: Geography, communes: Sequence[str], count: int, seed: int = 1, recorded_at: dt.datetime | None = None
) -> list[Record]:
    """``count`` encoded events (key: INE) simulated over ``communes``, the rentrée wave first.

    ``recorded_at``, when given, replaces each event's recording time (for latency measures).
    """
    population = sum(geography.communes[c].population for c in communes)
    scale = min(1.0, 1.5 * count / max(population * SCHOOL_AGE_SHARE, 1))
    simulator = Simulator(geography, communes, seed, pupils_per_commune=None, scale=scale, days=60)
    codec = event_codec()
    events: list[Record] = []
    for record in itertools.islice(simulator.records(), count):
        if recorded_at is not None:
            record = {**record, "recorded_at": max(recorded_at, record["event_time"])}
        events.append((record["pupil"]["ine"].encode(), codec.encode(avro_datum(record))))
    if len(events) < count:
        raise ValueError(f"the simulation gave {len(events)} events, not {count}")
    return events


def bench_pipeline(settings: Settings, geography: Geography, conventions: Sequence[Convention]) -> Pipeline:
    """The processor's pipeline routing through ``conventions``."""
    return build_pipeline(settings, geography, index_of(conventions, settings))


@dataclass(frozen=True)
class PipelineRate:
    """Events per second through ``Pipeline.process`` on one core, and outputs per event."""

    events_per_second: float
    outputs_per_event: float
    audits: int


def measure_pipeline(pipeline: Pipeline, events: Sequence[Record]) -> PipelineRate:
    """Decode, validate, route, minimise, pseudonymise and encode every event; time it."""
    outputs = audits = 0
    audit_topic = pipeline.topics.audit
    started = time.perf_counter()
    for key, value in events:
        out = pipeline.process(value, key, "bench")
        outputs += len(out)
        audits += sum(1 for o in out if o.topic == audit_topic)
    elapsed = time.perf_counter() - started
    return PipelineRate(len(events) / elapsed, outputs / len(events), audits)


def avro_share(pipeline: Pipeline, events: Sequence[Record]) -> float:
    """The share of ``Pipeline.process``'s time spent in Avro decode and encode (fastavro, through
    ``Codec``): the part of the core that any faster codec could take off, at the most."""
    with avro_timer() as spent:
        rate = measure_pipeline(pipeline, events)
    return spent() * rate.events_per_second / len(events)


@contextmanager
def avro_timer() -> Iterator[Callable[[], float]]:
    """Time every ``Codec.decode`` and ``Codec.encode`` call made in this process while the block
    runs; yields what reads the seconds spent in them so far. The class is restored after."""
    spent = [0.0]

    def timed(method: Callable[[Codec, Any], Any]) -> Callable[[Codec, Any], Any]:
        @functools.wraps(method)
        def call(codec: Codec, value: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(codec, value)
            finally:
                spent[0] += time.perf_counter() - started

        return call

    decode, encode = Codec.decode, Codec.encode
    Codec.decode, Codec.encode = timed(decode), timed(encode)  # type: ignore[method-assign]
    try:
        yield lambda: spent[0]
    finally:
        Codec.decode, Codec.encode = decode, encode  # type: ignore[method-assign]
