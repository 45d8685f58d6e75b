"""The benchmark's sections, in the order they run. Each declares its figures, then measures them."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...processors.bench_routing import measure_routing
from ...processors.conventions import Convention
from ...producers.simulator import Record as EventRecord
from ...producers.simulator import Simulator
from ...producers.snapshot_sample import write_sample_pair
from ..broker import broker_for, free_port
from ..kafka import TopicSpec
from ..metrics import PROCESSOR_STAGES
from ..settings import Settings, settings_env
from .ceiling import measure_ceiling
from .conventions import covered_communes, synthetic_conventions
from .core import avro_share, bench_pipeline, measure_pipeline, simulated_events
from .figures import Goal
from .latency import (
    Follower,
    Latencies,
    batch_times,
    broker_hop,
    event_producer,
    mean_since,
    paced_produce,
    percentiles,
)
from .processor import ProcessorRig, compare, delivered, wait_for_one_generation
from .records import Record, end_offsets, produce, read_span
from .runner import NATIONAL_RENTREE, Bench, Section, Sizes
from .views import (
    apply_rate,
    deliveries_of,
    drop_schema,
    parallel_rate,
    postgres_engine,
    prepare_topic,
    sqlite_engine,
)
from .workers import CpuUse, run_measured, start, start_profiler, stop_profiler

PASSTHROUGH_VALUE_SIZE = 300
WARM_UP_EVENTS = 500
SCAN_EVENTS = 200


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
                figure.note += f" (it took {span.first - started:.0f}s here)"
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
    bound = bench.figure(
        "core.without_avro",
        "processor core less its time in Avro decode and encode: the most a faster codec could give",
        "rate",
        versus_ceiling=True,
        note="each Codec call timed in one more pass over the same events",
    )
    ratio = bench.figure(
        "routing.ratio",
        f"routing cost per event, {sizes.many_conventions:,} conventions / 10",
        "ratio",
        Goal(1.5, at_least=False),
        note="processors.bench_routing.measure_routing: the events match the same conventions in both",
    )
    cost = bench.figure("routing.cost", f"routing cost per event, {sizes.many_conventions:,} conventions", "seconds")
    settings = bench.settings("core")
    conventions = synthetic_conventions(bench.geography, sizes.conventions)
    events = simulated_events(bench.geography, covered_communes(bench.geography, conventions), sizes.core_events)
    pipeline = bench_pipeline(settings, bench.geography, conventions)
    for run in range(bench.options.runs):
        rate = measure_pipeline(pipeline, events)
        pipeline_figure.values.append(rate.events_per_second)
        share = avro_share(pipeline, events)
        bound.values.append(rate.events_per_second / (1 - share))
        few = measure_routing(10, sizes.routing_events)
        many = measure_routing(sizes.many_conventions, sizes.routing_events, 0 if run else SCAN_EVENTS)
        ratio.values.append(many.microseconds_per_event / few.microseconds_per_event)
        cost.values.append(many.microseconds_per_event / 1e6)
        if many.scan_microseconds_per_event is not None:
            cost.note = f"a scan of every convention instead: {many.scan_microseconds_per_event:,.0f} µs per event"
    pipeline_figure.note += f"; {rate.outputs_per_event:.2f} outputs per event"
    per_event = 1e6 / rate.events_per_second
    bound.note += (
        f"; fastavro {share * per_event:.0f} µs of the core's {per_event:.0f} µs an event ({share:.0%}, last run)"
    )
    ratio.note += f"; {many.routes_per_event:.2f} routes per event"


def views(bench: Bench) -> None:
    """Deliveries applied per second by the views' maintainer, SQLite and PostgreSQL apart."""
    note = "view maintainer from a pre-produced delivery topic to a fresh database, batches with offsets"
    sqlite = bench.figure(
        "views.sqlite", "views: deliveries applied, SQLite", "rate", Goal(50_000, True), True, note=note
    )
    sqlite_cpu = bench.figure(
        "views.sqlite.cpu",
        "views: CPU per delivery applied, SQLite",
        "seconds",
        note="user + system time of the process applying them (the benchmark's), per delivery",
    )
    sqlite_bound = bench.figure(
        "views.sqlite.without_avro",
        "views: deliveries per CPU-second less Avro decode, SQLite: the most a faster codec could give",
        "rate",
        None,
        True,
        note="each Codec.decode timed in the same runs",
    )
    parallel = bench.figure(
        "views.sqlite.parallel",
        "views: deliveries applied, SQLite, 2 authorities' views at once",
        "rate",
        None,
        True,
        note="two view processes, a SQLite database each, reading the same topic; all they applied over "
        "the time from the first start to the last end",
    )
    postgres = bench.figure("views.postgresql", "views: deliveries applied, PostgreSQL", "rate", None, True, note=note)
    postgres_cpu = bench.figure(
        "views.postgresql.cpu",
        "views: CPU per delivery applied, PostgreSQL",
        "seconds",
        note="as for SQLite; the database server's own CPU is not counted",
    )
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
            rate = apply_rate(settings, topic, engine, len(deliveries))
            sqlite.values.append(rate.per_second)
            sqlite_cpu.values.append(rate.cpu)
            sqlite_bound.values.append(1 / (rate.cpu - rate.avro))
        finally:
            engine.dispose()
    sqlite_bound.note += f"; fastavro {rate.avro * 1e6:.0f} µs of the {rate.cpu * 1e6:.0f} µs a delivery (last run)"
    for _ in range(bench.options.runs):
        parallel.values.append(parallel_rate(settings, topic, settings.data_dir, len(deliveries)))
    url = bench.options.postgres_url
    if url is None:
        postgres.error = postgres_cpu.error = "no PostgreSQL URL (--postgres)"
        return
    for _ in range(bench.options.runs):
        engine, schema = postgres_engine(url)
        try:
            rate = apply_rate(settings, topic, engine, len(deliveries))
            postgres.values.append(rate.per_second)
            postgres_cpu.values.append(rate.cpu)
        finally:
            engine.dispose()
            drop_schema(url, schema)


def processor(bench: Bench) -> None:
    """The processor end to end (real faust workers), one worker then two in one group."""
    sizes = bench.sizes
    how = "events pre-produced to the raw topic; first to last audit record (worker start, group join excluded)"
    one = bench.figure(
        "processor.throughput",
        f"processor: source events/s, 1 worker, {sizes.conventions} conventions",
        "rate",
        Goal(25_000, True),
        True,
        note=how,
    )
    rentree = bench.figure(
        "rentree.minutes",
        f"national rentrée ({NATIONAL_RENTREE / 1e6:.1f} M enrolments) at that rate",
        "minutes",
        Goal(10, False),
        note="12.4 M / processor events per second (1 worker)",
    )
    cpu_note = (
        "user + system time of the worker process(es) (/proc/PID/stat) from the events' production to "
        "their last audit record, per event: less sensitive than the rates to other work on the machine"
    )
    one_cpu = bench.figure(
        "processor.cpu", "processor: worker CPU per source event, 1 worker", "seconds", note=cpu_note
    )
    two = bench.figure(
        "processor.two_workers", "processor: source events/s, 2 workers in one group", "rate", None, True
    )
    two_cpu = bench.figure("processor.two_workers.cpu", "processor: worker CPU per source event, 2 workers", "seconds")
    rentree_two = bench.figure(
        "rentree.two_workers.minutes",
        "national rentrée at the rate of 2 workers (the machine's 2 cores)",
        "minutes",
        Goal(10, False),
        note="12.4 M / processor events per second (2 workers in one group)",
    )
    same = bench.figure(
        "processor.identical",
        "2 workers vs 1: identical deliveries",
        "check",
        Goal(1, True),
        note="every event's deliveries (delivery time aside) and every headcount cell's final count",
    )
    conventions = synthetic_conventions(bench.geography, sizes.conventions)
    communes = covered_communes(bench.geography, conventions)
    runs = bench.options.runs
    count = sizes.processor_events
    events = simulated_events(bench.geography, communes, count * runs + WARM_UP_EVENTS)
    warm_up, chunks = events[:WARM_UP_EVENTS], [events[WARM_UP_EVENTS + i * count :][:count] for i in range(runs)]
    pipeline = bench_pipeline(bench.settings("expected"), bench.geography, conventions)
    audits = [measure_pipeline(pipeline, chunk).audits for chunk in [warm_up, *chunks]]
    rigs = []
    for workers, figure, cpu, minutes in ((1, one, one_cpu, rentree), (2, two, two_cpu, rentree_two)):
        rig = ProcessorRig(bench.settings(f"processor{workers}"), conventions)
        rigs.append(rig)
        try:
            started = [rig.start_worker() for _ in range(workers)]
            wait_for_one_generation(started)
            rig.run(warm_up, audits[0])
            for number, (chunk, expected) in enumerate(zip(chunks, audits[1:], strict=True), 1):
                profiling = bench.options.profile and workers == 1 and number == runs
                profiler = (
                    start_profiler(started[0], bench.options.work_dir / "processor-profile.svg") if profiling else None
                )
                used = rig.cpu_seconds()
                try:
                    span = rig.run(chunk, expected)
                finally:
                    if profiling:
                        one.note += f"; last run profiled: {stop_profiler(profiler)}"
                figure.values.append(len(chunk) / span.seconds)
                cpu.values.append((rig.cpu_seconds() - used) / len(chunk))
                minutes.values.append(NATIONAL_RENTREE / figure.values[-1] / 60)
            rig.wait_until_quiet()
        finally:
            rig.stop()
    first, second = (delivered(rig.settings, conventions) for rig in rigs)
    difference = compare(first, second)
    same.values.append(1.0 if not difference and first.events else 0.0)
    same.note += f"; {len(first.events):,} event deliveries and {len(first.cells):,} cells"
    same.note += f"; {first.records:,} and {second.records:,} records read" + (f"; {difference}" if difference else "")


def memory(bench: Bench) -> None:
    """Peak resident memory of a processor worker routing through many conventions (own broker)."""
    sizes = bench.sizes
    figure = bench.figure(
        "processor.memory",
        f"processor peak memory, {sizes.many_conventions:,} conventions",
        "bytes",
        Goal(250e6, False),
        note="peak RSS (VmHWM) of the worker process; a broker of its own, 1 partition a topic",
    )
    conventions = synthetic_conventions(bench.geography, sizes.many_conventions)
    events = simulated_events(bench.geography, covered_communes(bench.geography, conventions), sizes.memory_events)
    pipeline = bench_pipeline(bench.settings("expected"), bench.geography, conventions)
    audits = measure_pipeline(pipeline, events).audits
    # One delivery topic per convention: so many topics that kafka-python clients with their default
    # 1 MB frame limit can no longer read the broker's metadata (twice 10,000 here already breaks
    # them): a broker of its own for each run, so they spoil neither the other sections nor each other.
    given = bench.base.kafka_bootstrap
    for run in range(bench.options.runs if not bench.options.quick else 1):
        with broker_for(given, bench.options.work_dir / f"memory-broker-{run}") as bootstrap:
            rig = ProcessorRig(bench.settings("memory", partitions=1, kafka_bootstrap=bootstrap), conventions)
            try:
                rig.start_worker()
                rig.run(events, audits)
                figure.values.extend(rig.stop())
            finally:
                rig.stop()
    figure.note += f"; {len(events):,} events routed to {audits:,} deliveries and movements"


LATENCY_AUTHORITIES = ("bench-commune-69123", "bench-dep-69", "bench-region-10")
"""Whose views the latency is measured at: Lyon, the Rhône, the région académique of Lyon."""


def latency(bench: Bench) -> None:
    """Latency from production to view update at a steady rate (1 worker, a few authorities' views)."""
    sizes = bench.sizes
    rate = sizes.latency_rate
    how = "recorded_at = production time; view = commit of the SQLite transaction applying it"
    p50 = bench.figure("latency.p50", f"end-to-end latency p50, {rate:,.0f} events/s", "seconds", note=how)
    p99 = bench.figure("latency.p99", f"end-to-end latency p99, {rate:,.0f} events/s", "seconds", Goal(0.25, False))
    way_in = bench.figure("latency.in.p99", "- p99 of its way in: production to the processor's pipeline", "seconds")
    way_out = bench.figure("latency.out.p99", "- p99 of its way out: the pipeline to the view's commit", "seconds")
    worker_cpu = bench.figure("latency.worker.cpu", f"- worker CPU per source event at {rate:,.0f} events/s", "seconds")
    hop_how = "the feed's event producer settings, a consumer outside any group; a broker of its own each run"
    hop = bench.figure(
        "latency.hop.p99", f"reference: one hop on the broker alone, p99, {rate:,.0f} records/s", "seconds"
    )
    conventions = synthetic_conventions(bench.geography, sizes.conventions)
    followed = [authority for authority in LATENCY_AUTHORITIES if authority in {c.id for c in conventions}]
    communes = [c.code for c in bench.geography.communes_in_departement("69") if c.population > 0]
    warm_up = simulated_events(bench.geography, communes, WARM_UP_EVENTS, seed=2)
    simulator = Simulator(bench.geography, communes, seed=3, pupils_per_commune=None, scale=0.3)
    records = simulator.records()
    for run in range(bench.options.runs):
        # A broker of its own for each run (fresh topics, as on a cluster): the embedded broker slows
        # down as record batches pile up in a partition (see producers.kafka.LINGER_MS) and as it
        # holds more (after the other sections' hundreds of topics the same run took p99 0.7 - 1.3 s),
        # so a shared one would measure the broker's past, not the feed. The reference hop too.
        with broker_for(bench.base.kafka_bootstrap, bench.options.work_dir / f"hop-broker-{run}") as bootstrap:
            hops = broker_hop(bench.settings("hop", kafka_bootstrap=bootstrap), rate, sizes.latency_seconds)
        hop_p50, hop_p99 = percentiles(hops)
        hop.values.append(hop_p99)
        with broker_for(bench.base.kafka_bootstrap, bench.options.work_dir / f"latency-broker-{run}") as bootstrap:
            settings = bench.settings("latency", metrics_port=free_port(), kafka_bootstrap=bootstrap)
            audits = measure_pipeline(bench_pipeline(settings, bench.geography, conventions), warm_up).audits
            # simulated beforehand: the simulator's CPU (a fifth of a core at 2,000 events/s) would be
            # taken from the feed under measurement; each event is stamped and encoded as it is sent
            paced = list(itertools.islice(records, int(rate * sizes.latency_seconds) + 1))
            paced_run = _paced_run(settings, conventions, followed, warm_up, audits, paced, rate, sizes)
        measured, sent, batches = paced_run.latencies, paced_run.sent, paced_run.batches
        low, high = percentiles(measured.total)
        p50.values.append(low)
        p99.values.append(high)
        p99.note = f"{sent / sizes.latency_seconds:,.0f} events/s sent, {len(measured.total):,} deliveries measured"
        p99.note += " per run; a fresh broker and worker each run"
        for figure, part in ((way_in, measured.way_in), (way_out, measured.way_out)):
            part_p50, part_p99 = percentiles(part)
            figure.values.append(part_p99)
            figure.note = f"p50 {part_p50 * 1000:,.0f} ms (last run)"
        hop.note = f"p50 {hop_p50 * 1000:,.0f} ms (last run); {hop_how}"
        if "fetched age" in batches:
            way_in.note += (
                f"; a worker batch's oldest event, when fetched, was {batches['fetched age'] * 1000:,.0f} ms old (mean)"
            )
        stages = ", ".join(f"{stage} {batches[stage] * 1000:,.1f}" for stage in PROCESSOR_STAGES if stage in batches)
        way_out.note += f"; the worker's batch stages, mean ms: {stages}"
        worker_cpu.values.append(paced_run.cpu["worker"] / sent)
        worker_cpu.note = cpu_note(paced_run)


@dataclass(frozen=True)
class PacedRun:
    """What one latency run measured."""

    latencies: Latencies
    sent: int
    batches: dict[str, float]
    """The worker's mean batch figures (``mean_since``)."""
    cpu: dict[str, float]
    """CPU seconds used while the events were sent: by the worker, the views, the benchmark (the
    producer) and the whole machine (``CpuUse``)."""
    seconds: float
    """How long sending them took."""


def _paced_run(
    settings: Settings,
    conventions: Sequence[Convention],
    followed: Sequence[str],
    warm_up: Sequence[Record],
    audits: int,
    paced: list[EventRecord],
    rate: float,
    sizes: Sizes,
) -> PacedRun:
    """One latency run: a worker, the followed views, ``paced`` events sent at ``rate``."""
    worker_metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    rig = ProcessorRig(settings, conventions)
    producer = event_producer(settings)
    followers: list[Follower] = []
    try:
        wait_for_one_generation([rig.start_worker()])
        rig.run(warm_up, audits)
        since = dt.datetime.now(dt.UTC)
        for authority in followed:
            topic = settings.delivery_topic(authority)
            followers.append(Follower(settings, [topic], settings.data_dir / f"{authority}.sqlite", since).start())
        for follower in followers:
            follower.wait_ready()
        before = batch_times(worker_metrics)
        pids = {"worker": [w.process.pid for w in rig.workers], "views": [f.pid for f in followers]}
        use = CpuUse({**pids, "benchmark": [os.getpid()]}).start()
        sent = paced_produce(producer, settings.raw_topic, iter(paced), rate, sizes.latency_seconds)
        cpu, seconds = use.used()  # the steady state: the last events' way out is left out
        latencies = settle(followers)
        return PacedRun(latencies, sent, mean_since(before, batch_times(worker_metrics)), cpu, seconds)
    finally:
        for follower in followers:
            follower.stop()
        rig.stop()


def settle(followers: list[Follower], quiet: float = 2.0, timeout: float = 120.0) -> Latencies:
    """The followers' latencies once none has applied anything for ``quiet`` seconds (they stop)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while not any(f.failed() for f in followers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"views still applying after {timeout:.0f}s")
        count = sum(f.applied() for f in followers)
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.2)
    measured = Latencies()
    for follower in followers:
        follower.stop()
        if follower.error is not None:
            raise RuntimeError(follower.error)
        measured.extend(follower.latencies)
    return measured


def cpu_note(run: PacedRun) -> str:
    """Where the machine's CPU went during a latency run, in % of one core."""
    share = {name: 100 * seconds / run.seconds for name, seconds in run.cpu.items()}
    rest = share["machine"] - share["worker"] - share["views"] - share["benchmark"]
    return (
        f"CPU while the events were sent (last run), % of one core: worker {share['worker']:.0f}, "
        f"the views {share['views']:.0f}, the benchmark's producer {share['benchmark']:.0f}, the rest (the broker, "
        f"anything else) {rest:.0f}; the machine {share['machine']:.0f} of {100 * (os.cpu_count() or 1)}"
    )


SNAPSHOT_DEPARTEMENTS = ("69", "38", "13", "59", "75", "33")


def snapshot(bench: Bench) -> None:
    """Peak memory of the snapshot-diff import of a pair of exports (scolaflux import snapshot)."""
    rows = bench.sizes.snapshot_rows
    figure = bench.figure(
        "snapshot.memory",
        f"snapshot import peak memory, {rows:,}-row pair",
        "bytes",
        Goal(200e6, False),
        note="peak RSS (VmHWM) of `scolaflux import snapshot`, events sent to the broker",
    )
    settings = bench.settings("snapshot")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    previous, current = settings.data_dir / "previous.csv", settings.data_dir / "current.csv"
    write_sample_pair(previous, current, bench.geography, SNAPSHOT_DEPARTEMENTS, rows)
    args = ["-m", "scolaflux.infra.cli", "import", "snapshot", str(previous), str(current)]
    args += ["--as-of", "2026-12-01", "--force", "--rejects", str(settings.data_dir / "rejects.csv")]
    seconds = []
    for run in range(bench.options.runs):
        rss, elapsed, _ = _run_to_end("import", args, settings_env(settings), settings.data_dir / f"import-{run}.log")
        figure.values.append(rss)
        seconds.append(elapsed)
    figure.note += f"; {statistics.median(seconds):.0f} s each"


def headcounts(bench: Bench) -> None:
    """The headcounts' state: one partition's movements folded into its file, against dicts."""
    count = bench.sizes.headcount_movements
    on_disk = bench.figure(
        "headcounts.memory",
        f"headcounts: peak memory folding {count:,} enrolments into a partition's file",
        "bytes",
        note="peak RSS (VmHWM) of `python -m scolaflux.infra.bench.headcounts` (one convention, 1,000 lycées)",
    )
    in_memory = bench.figure(
        "headcounts.memory.dicts", "headcounts: the same, folded into dicts (the state before the file)", "bytes"
    )
    rate = bench.figure("headcounts.rate", "headcounts: movements folded into the file per CPU-second", "rate")
    folder = bench.settings("headcounts").data_dir
    for _ in range(bench.options.runs):
        measured = {}
        for figure, extra in ((on_disk, []), (in_memory, ["--in-memory"])):
            log_path = folder / "headcounts.log"
            log_path.unlink(missing_ok=True)
            args = ["-m", "scolaflux.infra.bench.headcounts", str(count), str(folder), *extra]
            rss, _, lines = _run_to_end("headcounts", args, {}, log_path)
            figure.values.append(rss)
            measured[figure.key] = json.loads(lines[-1])
        disk, dicts = measured[on_disk.key], measured[in_memory.key]
        rate.values.append(count / disk["cpu_seconds"])
    on_disk.note += (
        f"; file {disk['file_bytes'] / 1e6:.0f} MB; where to resume found in {disk['resume_seconds'] * 1e3:.1f} ms"
    )
    rate.note = f"into dicts: {count / dicts['cpu_seconds']:,.0f} per CPU-second, all held in memory"


def _run_to_end(what: str, args: list[str], env: dict[str, str], log_path: Path) -> tuple[int, float, list[str]]:
    """Run ``python ARGS`` to its end: its peak memory, seconds and output lines; raise if it failed."""
    code, rss, elapsed = run_measured(args, env, log_path, timeout=1800)
    lines = log_path.read_text(errors="replace").splitlines()
    if code != 0:
        raise RuntimeError(f"{what} exited {code}: {' '.join(lines[-3:])}")
    return rss, elapsed, lines


SECTIONS: dict[str, Section] = {
    "ceiling": ceiling,
    "faust": faust_passthrough,
    "core": core,
    "processor": processor,
    "views": views,
    "latency": latency,
    "snapshot": snapshot,
    "headcounts": headcounts,
    "memory": memory,
}
"""Every section, in the order they run (``--only`` picks some)."""
