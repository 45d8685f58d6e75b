"""The benchmark's sections, in the order they run. Each declares its figures, then measures them."""

from __future__ import annotations

import os
import time
import uuid

from ..kafka import TopicSpec
from .ceiling import measure_ceiling
from .conventions import covered_communes, synthetic_conventions
from .core import RoutingWorkload, bench_pipeline, measure_pipeline, simulated_events
from .figures import Goal
from .records import end_offsets, produce, read_span
from .runner import Bench, Section
from .views import apply_rate, deliveries_of, drop_schema, postgres_engine, prepare_topic, sqlite_engine
from .workers import start

PASSTHROUGH_VALUE_SIZE = 300


def ceiling(bench: Bench) -> None:
    """The machine's ceiling: librdkafka producing then consuming 300-byte records."""
    produced = bench.figure("ceiling.produce", "ceiling: librdkafka produce (300 B, 6 partitions)", "rate")
    consumed = bench.figure("ceiling.consume", "ceiling: librdkafka consume", "rate")
    passthrough = bench.figure(
        "ceiling.passthrough",
        "ceiling: librdkafka pass-through",
        "rate",
        versus_ceiling=True,
        note="1/(1/produce + 1/consume): the base of every 'x ceiling' ratio",
    )
    for _ in range(bench.options.runs):
        measured = measure_ceiling(bench.bootstrap, bench.sizes.ceiling_records, bench.settings("ceiling").topic_prefix)
        produced.values.append(measured.produce)
        consumed.values.append(measured.consume)
        passthrough.values.append(measured.passthrough)


def faust_passthrough(bench: Bench) -> None:
    """A plain faust agent forwarding each record with an awaited send, in a real worker process."""
    figure = bench.figure(
        "faust.passthrough",
        "faust pass-through agent (await send per record)",
        "rate",
        versus_ceiling=True,
        note="first to last output record; worker start and group join excluded",
    )
    settings = bench.settings("faust")
    source, sink = f"{settings.topic_prefix}.in", f"{settings.topic_prefix}.out"
    bench.topics([TopicSpec(source, settings.partitions), TopicSpec(sink, settings.partitions)])
    value, count = os.urandom(PASSTHROUGH_VALUE_SIZE), bench.sizes.faust_records

    def records() -> list[tuple[bytes, bytes]]:
        return [(uuid.uuid4().bytes, value) for _ in range(count)]

    produce(bench.bootstrap, source, records())  # the first run is waiting when the worker starts
    starts = end_offsets(bench.bootstrap, [sink])
    started = time.time()
    args = ["-m", "scolaflux.infra.bench.passthrough", bench.bootstrap, source, sink, settings.topic_prefix]
    worker = start([*args, str(settings.data_dir)], {}, settings.data_dir / "faust-passthrough.log")
    try:
        for run in range(bench.options.runs):
            if run:
                starts = end_offsets(bench.bootstrap, [sink])
                produce(bench.bootstrap, source, records())
            span = read_span(bench.bootstrap, starts, count, timeout=180 + count / 200)
            if not run:
                figure.note += f" (it took {span.first_ms / 1000 - started:.0f}s here)"
            figure.values.append(span.rate())
    finally:
        worker.stop()


def core(bench: Bench) -> None:
    """The processor's pure core on one core, and routing with few and many conventions."""
    sizes = bench.sizes
    pipeline_figure = bench.figure(
        "core.pipeline",
        f"processor core: decode, validate, route ({sizes.conventions} conventions), minimise, pseudonymise, encode",
        "rate",
        versus_ceiling=True,
        note="Pipeline.process on one core, no broker: bounds one worker",
    )
    ratio = bench.figure(
        "routing.ratio",
        f"routing cost per event, {sizes.many_conventions:,} conventions / 10",
        "ratio",
        Goal(1.5, at_least=False),
        note="same events, same routes found by both indexes",
    )
    cost = bench.figure("routing.cost", f"routing cost per event, {sizes.many_conventions:,} conventions", "seconds")
    settings = bench.settings("core")
    conventions = synthetic_conventions(bench.geography, sizes.conventions)
    events = simulated_events(bench.geography, covered_communes(bench.geography, conventions), sizes.core_events)
    pipeline = bench_pipeline(settings, bench.geography, conventions)
    workload = RoutingWorkload(settings, bench.geography, 10, sizes.many_conventions, sizes.routing_events)
    for _ in range(bench.options.runs):
        rate = measure_pipeline(pipeline, events)
        pipeline_figure.values.append(rate.events_per_second)
        routing = workload.measure()
        ratio.values.append(routing.ratio)
        cost.values.append(routing.many_seconds)
    pipeline_figure.note += f"; {rate.outputs_per_event:.2f} outputs per event"
    ratio.note += f"; {routing.routes_per_event:.2f} routes per event"


def views(bench: Bench) -> None:
    """Deliveries applied per second by the views' maintainer, SQLite and PostgreSQL apart."""
    note = "view maintainer from a pre-produced delivery topic to a fresh database, batches with offsets"
    sqlite = bench.figure(
        "views.sqlite", "views: deliveries applied, SQLite", "rate", Goal(50_000, True), True, note=note
    )
    postgres = bench.figure("views.postgresql", "views: deliveries applied, PostgreSQL", "rate", None, True, note=note)
    settings = bench.settings("views")
    conventions = synthetic_conventions(bench.geography, bench.sizes.conventions)
    pipeline = bench_pipeline(settings, bench.geography, conventions)
    communes = covered_communes(bench.geography, conventions)
    events = simulated_events(bench.geography, communes, int(bench.sizes.view_deliveries * 1.4))
    deliveries = deliveries_of(pipeline, events)[: bench.sizes.view_deliveries]
    topic = prepare_topic(settings, deliveries)
    for _ in range(bench.options.runs):
        engine = sqlite_engine(settings.data_dir)
        try:
            sqlite.values.append(apply_rate(settings, topic, engine, len(deliveries)))
        finally:
            engine.dispose()
    url = bench.options.postgres_url
    if url is None:
        postgres.error = "no PostgreSQL URL (--postgres)"
        return
    for _ in range(bench.options.runs):
        engine, schema = postgres_engine(url)
        try:
            postgres.values.append(apply_rate(settings, topic, engine, len(deliveries)))
        finally:
            engine.dispose()
            drop_schema(url, schema)


SECTIONS: dict[str, Section] = {
    "ceiling": ceiling,
    "faust": faust_passthrough,
    "core": core,
    "views": views,
}
"""Every section, in the order they run (``--only`` picks some)."""
