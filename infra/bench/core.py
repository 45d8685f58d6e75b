"""Figures of the processor's pure core, without a broker: the pipeline per event, and routing.

The events are the simulator's (the rentrée wave first) over the communes of the conventions'
académies, encoded as the producers encode them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...processors.conventions import Convention
from ...processors.history import ConventionHistory
from ...processors.pipeline import Pipeline
from ...processors.routing import ConventionIndex, Location, Locator
from ...processors.wiring import build_pipeline, master_key
from ...producers.simulator import SCHOOL_AGE_SHARE, Simulator, avro_datum
from ...schemas.codec import event_codec
from ...schemas.geography import Geography
from ...schemas.models import Event
from ..settings import Settings
from .conventions import DEFAULT_ACADEMIES, synthetic_conventions
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


@dataclass(frozen=True)
class RoutingCost:
    """Seconds per event routed with few and with many conventions (same events, same matches)."""

    few: int
    many: int
    few_seconds: float
    many_seconds: float
    routes_per_event: float

    @property
    def ratio(self) -> float:
        """Cost with many conventions divided by the cost with few."""
        return self.many_seconds / self.few_seconds


class RoutingWorkload:
    """Events located once, and two indexes: ``many`` conventions, and a few that route them alike.

    The few are the conventions the events match among the many, topped up to ``few`` with others:
    both indexes find the same routes for every event, so the ratio of their costs is the cost of
    the conventions that do not match, which an index keeps near 1 and a scan makes grow.
    """

    def __init__(self, settings: Settings, geography: Geography, few: int, many: int, events: int) -> None:
        conventions = synthetic_conventions(geography, many)
        academy = DEFAULT_ACADEMIES[0]
        communes = [
            c.code
            for c in sorted(
                (c for c in geography.communes.values() if c.parent is None and c.population > 0),
                key=lambda c: (-c.population, c.code),
            )
            if geography.departements[c.departement].academy == academy
        ][:3]
        locate = Locator(geography)
        decoded = [Event.from_avro(event_codec().decode(v)) for _, v in simulated_events(geography, communes, events)]
        self.events: list[tuple[Event, Location]] = [(e, locate(e)) for e in decoded]
        self.many = index_of(conventions, settings)
        matched = {r.convention_id for e, w in self.events for r in self.many.routes(e, w)}
        chosen = [c for c in conventions if c.id in matched]
        chosen += [c for c in conventions if c.id not in matched][: max(0, few - len(chosen))]
        self.few = index_of(chosen, settings)
        self.routes = sum(len(self.few.routes(e, w)) for e, w in self.events)
        for event, where in self.events:
            if [r.convention_id for r in self.few.routes(event, where)] != [
                r.convention_id for r in self.many.routes(event, where)
            ]:
                raise AssertionError("the two indexes route an event differently")

    def measure(self, repeat: int = 3) -> RoutingCost:
        """Route every event ``repeat`` times through each index (interleaved); seconds per event."""
        few = many = 0.0
        for _ in range(repeat):
            few += self._time(self.few)
            many += self._time(self.many)
        count = len(self.events) * repeat
        return RoutingCost(
            len(self.few.histories), len(self.many.histories), few / count, many / count, self.routes / len(self.events)
        )

    def _time(self, index: ConventionIndex) -> float:
        routes = index.routes
        started = time.perf_counter()
        for event, where in self.events:
            routes(event, where)
        return time.perf_counter() - started
