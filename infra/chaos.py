"""``scolaflux chaos`` (``make chaos``): crash, pause and duplicate a running feed, then check that
nothing was lost or doubled.

On a broker of its own (the embedded one, unless ``SCOLAFLUX_KAFKA_BOOTSTRAP`` is set) it publishes
the example conventions, starts the processor (``scolaflux process``) and one view maintainer per
authority (``scolaflux view run``) as child processes, and sends simulated source events, with a
known set of bad records among them, in waves:

- **kill rounds**: a wave is sent, and the processor and every view are each killed with SIGKILL
  at a random moment once they are at work, and restarted at once;
- **duplicates and reordering**: one wave goes in another interleaving of pupils and is followed
  by the first wave again (a retry, a second source); another by a shuffled copy of earlier events
  (``chaos_reference.waves``);
- **a broker outage**: mid-run the broker is frozen (SIGSTOP) for ``--pause`` seconds while a wave
  is produced; ``scolaflux status`` runs during the pause, at the resume and after recovery, and
  the processor's lag is sampled every second;
- **a takeover**: a second processor worker joins the group; once both consume, one is killed for
  good; the other must take over its partitions.

After recovery each view is compared with the view of an uninterrupted run of the same events
(``chaos_reference``); the audit, as its reader shows it (one entry per delivery id), must hold
exactly the deliveries of that run (the raw copies a replay wrote are counted); the dead-letter
topic exactly the bad records.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from ..consumers.authority import Authority
from ..consumers.store import load_offsets, make_engine, open_view_engine
from ..processors.audit import one_per_delivery
from ..processors.conventions import Convention, load_directory
from ..processors.live import in_force
from ..processors.publish import publish, read_histories
from ..processors.routing import ConventionIndex
from ..processors.wiring import aggregation_topic, build_pipeline, master_key, processor_topics
from ..producers.kafka import EventProducer
from ..schemas.codec import audit_codec
from ..schemas.geography import load_geography
from .broker import EmbeddedBroker, free_port
from .chaos_reference import (
    Frame,
    Reference,
    Wave,
    bad_frames,
    build_reference_view,
    comparable,
    differences,
    encode_records,
    interleave,
    reference_run,
    simulated_records,
    waves,
)
from .kafka import ORIGIN_HEADER, ensure_topics, make_consumer, pipeline_topics
from .lag import LagReader, role_of, watched_groups
from .processes import start_process, stop_process
from .settings import Settings, settings_env
from .status import Sampler
from .topics import end_offsets, partitions_of, read_to_end

Say = Callable[[str], None]
CONSUMED = "scolaflux_events_consumed_total"


@dataclass(frozen=True)
class ChaosPlan:
    """What to run: how many events, rounds, bad records, which authorities, which faults."""

    events: int = 200_000
    rounds: int = 10
    departements: tuple[str, ...] = ("69", "42", "44", "75")
    scale: float = 0.03
    bad: int = 240
    seed: int = 2026
    authorities: tuple[str, ...] = ()
    """``level:code`` of the views to run; empty: every authority of a published convention."""
    view_batch: int = 50
    """Deliveries a view applies per transaction: small, so that kills often land inside one."""
    max_kill_delay: float = 2.0
    pause_seconds: float = 20.0
    """How long the broker is frozen mid-run (0: no pause; needs the embedded broker)."""
    disorder: bool = True
    takeover: bool = True
    database_url: str | None = None
    recovery_timeout: float = 900.0
    quiet_seconds: float = 30.0
    """Once every view has applied its topics, how long the processor must have consumed nothing
    (while ready) before its offsets still uncommitted are reported rather than waited for."""


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --------------------------------------------------------------------------- child processes


class Child:
    """One process of the feed under test (``scolaflux ARGS…``), on a metrics port of its own:
    started, killed, restarted; its /readyz and /metrics read."""

    def __init__(self, name: str, args: Sequence[str], settings: Settings, log_path: Path) -> None:
        self.name, self.args, self.log_path = name, list(args), log_path
        self.settings = settings.model_copy(update={"metrics_port": free_port()})
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.kills = self.crashes = 0

    def start(self) -> None:
        """Start (again); its log is appended to."""
        self.process = start_process(self.args, self.settings, self.log_path)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        """Whether it runs now."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut or the OOM killer."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()
            self.kills += 1

    def revive(self) -> None:
        """Restart it if it exited by itself (counted as a crash)."""
        if self.process is not None and not self.alive():
            self.crashes += 1
            self.start()

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 30 s."""
        if self.process is not None:
            stop_process(self.process, timeout=30.0)

    def ready(self) -> bool:
        """Whether its /readyz says so (the processor: partitions assigned)."""
        return self._get("/readyz") is not None

    def counter(self, name: str) -> float:
        """A counter of its /metrics summed over labels (0 when it does not answer, e.g. restarting)."""
        text = self._get("/metrics")
        if text is None:
            return 0.0
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.metrics_port}{path}", timeout=5) as answer:
                return answer.read().decode()
        except OSError:  # refused, 503, timeout
            return None


@dataclass
class Deployment:
    """The feed under test: settings, conventions, its processor worker(s) and its views."""

    settings: Settings
    conventions: list[Convention]
    processors: list[Child] = field(default_factory=list)
    views: dict[Authority, Child] = field(default_factory=dict)
    engines: dict[Authority, Engine] = field(default_factory=dict)
    retired: list[Child] = field(default_factory=list)
    """Workers killed for good (not restarted, still counted)."""

    def conventions_of(self, authority: Authority) -> list[str]:
        """The ids of the authority's conventions."""
        mine = (authority.level, authority.code)
        return sorted(c.id for c in self.conventions if (c.authority.level, c.authority.code) == mine)

    def topics_of(self, authority: Authority) -> list[str]:
        """The delivery topics of the authority's conventions."""
        return [self.settings.delivery_topic(c) for c in self.conventions_of(authority)]

    @property
    def aggregated(self) -> frozenset[str]:
        """Conventions delivering headcount cells rather than events."""
        return frozenset(c.id for c in self.conventions if c.identity == "aggregated")

    def add_processor(self) -> Child:
        """One more processor worker (same consumer group), started."""
        name = f"processor-{len(self.processors) + 1}"
        child = Child(name, ["process"], self.settings, self._log(name))
        child.start()
        self.processors.append(child)
        return child

    def add_view(self, authority: Authority, batch: int) -> None:
        """The view maintainer of one authority, started."""
        args = ["view", "run", str(authority), "--batch-size", str(batch)]
        child = Child(f"view {authority}", args, self.settings, self._log(f"view-{authority.slug}"))
        child.start()
        self.views[authority] = child
        s = self.settings
        self.engines[authority] = open_view_engine(s.database_url, s.data_dir / "views", authority, s.topic_prefix)

    def children(self) -> list[Child]:
        """Every process of the deployment."""
        return [*self.processors, *self.views.values()]

    def revive(self) -> None:
        """Restart whatever exited by itself."""
        for child in self.children():
            child.revive()

    def stop(self) -> None:
        """Stop every process."""
        for child in self.children():
            child.stop()

    def _log(self, name: str) -> Path:
        return self.settings.data_dir / "logs" / f"{name}.log"


def deploy(settings: Settings, conventions_dir: Path, plan: ChaosPlan) -> Deployment:
    """Topics, the example conventions published, the processor and the views started."""
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings, [*pipeline_topics(settings), *processor_topics(settings)])
    conventions = load_directory(conventions_dir, load_geography())
    publish(settings, [(c.id, c) for c in conventions])
    deployment = Deployment(settings, conventions)
    deployment.add_processor()
    wanted = {Authority.parse(a) for a in plan.authorities}
    for authority in sorted({Authority(c.authority.level, c.authority.code) for c in conventions}, key=str):
        if not wanted or authority in wanted:
            deployment.add_view(authority, plan.view_batch)
    return deployment


def produce(deployment: Deployment, frames: Sequence[Frame]) -> None:
    """Send frames to the raw topic through the producers' idempotent producer, acknowledged."""
    with EventProducer(deployment.settings) as producer:
        producer.send_frames(frames)
        producer.flush()


# --------------------------------------------------------------------------- kill rounds


def kill_round(deployment: Deployment, wave: Wave, rng: random.Random, plan: ChaosPlan) -> Counter[str]:
    """Send a wave, then kill the processor and every view once each, each at a random moment once
    it is at work (the processor has consumed records, the view has committed a batch), and restart
    it at once. A view with nothing to do is killed anyway, 5 s after the processor. Which were
    killed at work."""
    deployment.revive()
    processor = deployment.processors[0]
    marks: dict[Child, Callable[[], float]] = {processor: lambda: processor.counter(CONSUMED)}
    for authority, child in deployment.views.items():
        engine, topics = deployment.engines[authority], deployment.topics_of(authority)
        marks[child] = lambda e=engine, t=topics: sum(sum(load_offsets(e, topic).values()) for topic in t)
    starts = {child: mark() for child, mark in marks.items()}  # before the wave: its first work counts
    produce(deployment, wave.frames)
    killed_at: float | None = None
    at_work: Counter[str] = Counter()

    def give_up(child: Child) -> bool:
        return child is not processor and killed_at is not None and time.monotonic() - killed_at > 5.0

    def kill(child: Child) -> None:
        nonlocal killed_at
        wait_until(lambda: marks[child]() != starts[child] or give_up(child), 180.0)
        if marks[child]() != starts[child]:
            at_work[child.name] += 1
        time.sleep(rng.uniform(0, plan.max_kill_delay))  # the random moment: inside a batch or between two
        child.kill()
        child.start()
        if child is processor:
            killed_at = time.monotonic()

    threads = [threading.Thread(target=kill, args=(child,), daemon=True) for child in marks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return at_work


# --------------------------------------------------------------------------- broker pause


@dataclass
class PauseEpisode:
    """What a frozen broker did to the feed, and what ``scolaflux status`` and a lag sampler saw."""

    seconds: float
    produced: int
    status_during: str
    status_resumed: str
    status_after: str
    max_lag: int
    recovered_after: float
    uncommitted: dict[str, int]
    timeline: str


def broker_pause(
    deployment: Deployment, broker: EmbeddedBroker, wave: Wave, seconds: float, quiet: float, say: Say
) -> PauseEpisode:
    """Freeze the broker mid-wave for ``seconds`` (half the wave is produced before, half during the
    outage, acknowledged after it); resume; wait until everything is applied again."""
    deployment.revive()
    processor = deployment.processors[0]
    half = len(wave.frames) // 2
    before = processor.counter(CONSUMED)
    produce(deployment, wave.frames[:half])
    wait_until(lambda: processor.counter(CONSUMED) != before, timeout=180.0)  # the feed is at work
    watch = LagWatch(deployment.settings)
    wait_until(lambda: watch.samples, timeout=60.0)
    broker.pause()
    paused_at = time.monotonic()
    producing = threading.Thread(target=produce, args=(deployment, wave.frames[half:]), daemon=True)
    producing.start()
    during = run_status(deployment.settings, seconds + 90, "pause")
    time.sleep(max(0.0, seconds - (time.monotonic() - paused_at)))  # the outage lasts as long as asked
    broker.resume()
    resumed_at = time.monotonic()
    say(f"  broker resumed after {resumed_at - paused_at:.1f} s; status during the pause: {during}")
    resumed = run_status(deployment.settings, 120, "resume")
    producing.join()  # every event of the wave acknowledged by the broker
    recovery = wait_recovered(deployment, say, quiet, timeout=300.0)
    recovered_after = time.monotonic() - resumed_at
    after = run_status(deployment.settings, 120, "after-pause")
    watch.stop()
    return PauseEpisode(
        seconds=resumed_at - paused_at,
        produced=len(wave.frames) - half,
        status_during=during,
        status_resumed=resumed,
        status_after=after,
        max_lag=max((lag for _, _, lag in watch.samples if lag is not None), default=0),
        recovered_after=recovered_after,
        uncommitted=recovery.uncommitted,
        timeline=watch.timeline(paused_at, resumed_at),
    )


def run_status(settings: Settings, timeout: float, name: str) -> str:
    """``scolaflux status --json`` (a 3 s window) against the feed: exit code and verdicts, in one line
    (its whole answer kept in ``DATA_DIR/status-NAME.json``)."""
    args = [sys.executable, "-m", "scolaflux.infra.cli", "status", "--json", "--window", "3", "--interval", "1"]
    env = {**os.environ, **settings_env(settings)}
    started = time.monotonic()
    try:
        done = subprocess.run(args, env=env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    took = time.monotonic() - started
    if not done.stdout.strip():
        message = done.stderr.decode(errors="replace").strip().splitlines()
        return f"exit {done.returncode} after {took:.0f} s: {message[-1] if message else ''}"
    (settings.data_dir / f"status-{name}.json").write_bytes(done.stdout)
    report = json.loads(done.stdout)
    verdicts = ", ".join(f"{g['group'].split('-', 1)[1]} {g['status']} lag {g['lag']}" for g in report["groups"])
    return f"exit {done.returncode} after {took:.0f} s ({'ALL OK' if report['ok'] else 'NOT OK'}): {verdicts}"


class LagWatch:
    """Samples the feed's groups every second in a thread (``status.Sampler``, as ``scolaflux monitor``
    does) and notes the processor's verdict and lag, or that the broker could not be read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: list[tuple[float, str, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(60)

    def timeline(self, paused_at: float, resumed_at: float) -> str:
        """The processor's verdict and lag over time (seconds from the pause), failed samples grouped."""
        parts: list[str] = []
        failed: list[float] = []
        for at, verdict, lag in [*self.samples, (float("inf"), "", 0)]:
            if lag is None:
                failed.append(at - paused_at)
                continue
            if failed:
                parts.append(f"{failed[0]:+.0f}..{failed[-1]:+.0f} s: {len(failed)} samples failed")
                failed = []
            if at != float("inf"):
                parts.append(f"{at - paused_at:+.0f} s {verdict} {lag}")
        return f"(resumed at +{resumed_at - paused_at:.0f} s) " + "; ".join(parts)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with LagReader(self.settings) as reader:
                    sampler = Sampler(self.settings, reader, max_samples=5)
                    while not self._stop.is_set():
                        began = time.monotonic()
                        sampler.sample()
                        for group in (g for g in sampler.report().groups if g.role == "processor"):
                            if any(p.committed for t in group.topics for p in t.partitions):
                                self.samples.append((began, group.status, group.lag))
                            else:  # every committed offset read as 0 mid-run: the read failed (README, "Faults")
                                self.samples.append((began, "committed offsets unread", None))
                        self._stop.wait(1.0)
            except Exception as error:  # the broker is away: note it, try again
                self.samples.append((time.monotonic(), type(error).__name__, None))
                self._stop.wait(1.0)


# --------------------------------------------------------------------------- takeover


@dataclass
class Takeover:
    """Two workers in one group, one killed for good: what each had consumed of the wave before the
    kill; how long until the survivor received a new assignment, and until the group had committed
    the whole raw topic (None: never)."""

    killed: str
    survivor: str
    consumed_before: dict[str, int]
    reassigned_after: float | None
    lag_zero_after: float | None


REBALANCES = "scolaflux_rebalances_total"


def takeover(deployment: Deployment, wave: Wave, rng: random.Random) -> Takeover:
    """A second worker joins; a wave is sent; once both workers consume it (they share the raw
    partitions), one of them is killed for good; the other must take over its partitions."""
    first = deployment.processors[0]
    first.revive()
    second = deployment.add_processor()
    pair = (first, second)
    if not wait_until(lambda: all(c.ready() for c in pair), timeout=240.0, interval=0.5):
        raise RuntimeError("the second processor worker never became ready")
    before = {c: c.counter(CONSUMED) for c in pair}
    produce(deployment, wave.frames)
    if not wait_until(lambda: all(c.counter(CONSUMED) > before[c] for c in pair), timeout=240.0, interval=0.5):
        raise RuntimeError("the two processor workers never both consumed: they do not share the partitions")
    time.sleep(rng.uniform(0, 1.0))
    victim, survivor = (first, second) if rng.random() < 0.5 else (second, first)
    consumed = {c.name: int(c.counter(CONSUMED) - before[c]) for c in pair}
    rebalances = survivor.counter(REBALANCES)
    victim.kill()
    killed_at = time.monotonic()
    deployment.processors.remove(victim)
    deployment.retired.append(victim)
    reassigned = wait_until(lambda: survivor.counter(REBALANCES) > rebalances, timeout=120.0)
    reassigned_after = time.monotonic() - killed_at if reassigned else None
    raw = f"{deployment.settings.raw_topic}/"
    with LagReader(deployment.settings) as reader:
        caught_up = wait_until(
            lambda: not [tp for tp in progress(deployment, reader).uncommitted if tp.startswith(raw)], 180.0, 1.0
        )
    return Takeover(
        killed=victim.name,
        survivor=survivor.name,
        consumed_before=consumed,
        reassigned_after=reassigned_after,
        lag_zero_after=time.monotonic() - killed_at if caught_up else None,
    )


# --------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class Progress:
    """Where the feed stands against the log ends: records past the processor's committed offsets on
    each of its input partitions, and records each view has not applied."""

    uncommitted: dict[str, int]
    unapplied: dict[str, int]

    def behind(self) -> str:
        """What is behind, in one line."""
        parts = [f"processor {sum(self.uncommitted.values()):,}"] if self.uncommitted else []
        return ", ".join(parts + [f"{name} {n:,}" for name, n in self.unapplied.items()])


def processor_groups(settings: Settings, reader: LagReader) -> list[str]:
    """The deployment's groups but the views': the processor's, and any other its app uses (e.g. for
    the headcounts, which consume the aggregation topic)."""
    return [g for g in watched_groups(settings, reader.groups()) if role_of(settings, g)[0] != "view"]


def progress(deployment: Deployment, reader: LagReader) -> Progress:
    """Read where the processor (the committed offsets of its groups on its input topics) and every
    view (the offsets stored with it) stand."""
    s = deployment.settings
    probe = make_consumer(s, None)
    try:
        inputs = [tp for t in (s.raw_topic, aggregation_topic(s)) for tp in partitions_of(probe, t)]
        topics = [s.delivery_topic(c.id) for c in deployment.conventions] + [s.audit_topic, s.deadletter_topic]
        outputs = [tp for t in topics for tp in partitions_of(probe, t)]
    finally:
        probe.close(autocommit=False)
    ends = end_offsets(s, inputs + outputs)
    committed: dict[tuple[str, int], int] = {}
    for offsets in reader.all_committed(processor_groups(s, reader), (s.raw_topic, aggregation_topic(s))).values():
        for where, offset in offsets.items():
            committed[where] = max(offset, committed.get(where, 0))
    uncommitted = {f"{tp.topic}/{tp.partition}": ends[tp] - committed.get((tp.topic, tp.partition), 0) for tp in inputs}
    unapplied: dict[str, int] = {}
    for authority, engine in deployment.engines.items():
        mine = set(deployment.topics_of(authority))
        applied = {topic: load_offsets(engine, topic) for topic in mine}
        unapplied[f"view {authority}"] = sum(
            ends[tp] - applied[tp.topic].get(tp.partition, 0) for tp in outputs if tp.topic in mine
        )
    return Progress(
        {k: n for k, n in uncommitted.items() if n > 0},
        {k: n for k, n in unapplied.items() if n > 0},
    )


@dataclass(frozen=True)
class Recovery:
    """How long the feed took to apply everything, and the processor's input partitions whose
    committed offsets had not reached the log end once everything was applied and it had consumed
    nothing for a while (a worker that processed its input but does not commit it: its lag stays)."""

    seconds: float
    uncommitted: dict[str, int]


def wait_recovered(deployment: Deployment, say: Say, quiet: float, timeout: float) -> Recovery:
    """Restart whatever exited by itself, and wait until every view has applied its topics and the
    processor has committed its input; or, with the views applied, until the processor has consumed
    nothing for ``quiet`` seconds while ready (/readyz): then its uncommitted partitions are reported."""
    started = time.monotonic()
    said, quiet_since, consumed = started, started, -1.0
    last: Progress | None = None
    with LagReader(deployment.settings) as reader:
        while time.monotonic() - started < timeout:
            deployment.revive()
            last = progress(deployment, reader)
            now_consumed = sum(p.counter(CONSUMED) for p in deployment.processors)
            if now_consumed != consumed or not all(p.ready() for p in deployment.processors):
                consumed, quiet_since = now_consumed, time.monotonic()
            if not last.unapplied and not last.uncommitted:
                time.sleep(3.0)  # and still so a moment later: headcount cells follow their movements
                again = progress(deployment, reader)
                if not again.unapplied and not again.uncommitted:
                    return Recovery(time.monotonic() - started, {})
            elif not last.unapplied and time.monotonic() - quiet_since >= quiet:
                return Recovery(time.monotonic() - started, last.uncommitted)
            if time.monotonic() - said > 30:
                said = time.monotonic()
                say(f"  still behind after {said - started:.0f} s: {last.behind()}")
            time.sleep(1.0)
    raise TimeoutError(f"the feed did not recover within {timeout:.0f} s: {last.behind() if last else '?'} behind")


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class TopicCheck:
    """Items found on a topic against those an uninterrupted run gives: raw records read, items as
    counted (distinct, or as a reader shows them), expected, and the missing and unexpected ones."""

    name: str
    records: int
    found: int
    expected: int
    missing: int
    unexpected: int

    @property
    def ok(self) -> bool:
        """One item per expected one: nothing missing, nothing unexpected, nothing twice."""
        return self.missing == 0 and self.unexpected == 0 and self.found == self.expected

    def line(self) -> str:
        """One line for the report."""
        return (
            f"{self.name}: {self.found:,} (from {self.records:,} records: {self.records - self.found:,} raw copies), "
            f"expected {self.expected:,}: missing {self.missing}, unexpected {self.unexpected}"
        )


def check(name: str, records: int, found: Sequence[object], expected: set[object]) -> TopicCheck:
    """Compare the items found (a list: an item twice is an error) with those expected."""
    seen = set(found)
    return TopicCheck(name, records, len(found), len(expected), len(expected - seen), len(seen - expected))


def audit_check(settings: Settings, reference: Reference) -> TopicCheck:
    """The audit as its reader shows it (``one_per_delivery``) against the uninterrupted run's deliveries."""
    codec = audit_codec()
    records = [codec.decode(r.value) for r in read_to_end(settings, settings.audit_topic)]
    entries = [r["delivery_id"] for r in one_per_delivery(records)]
    return check("audit entries (one per delivery id)", len(records), entries, set(reference.audit_ids))


def deadletter_checks(settings: Settings, bad: frozenset[bytes]) -> list[TopicCheck]:
    """The dead-letter topic against the bad records: their raw values, and their origins
    (topic/partition/offset on the raw topic); distinct, the copies a replay wrote counted."""
    origins = {
        f"{r.topic}/{r.partition}/{r.offset}" for r in read_to_end(settings, settings.raw_topic) if r.value in bad
    }
    letters = list(read_to_end(settings, settings.deadletter_topic))
    found = {dict(r.headers or []).get(ORIGIN_HEADER, b"").decode() for r in letters}
    return [
        check("dead letters by raw value (distinct)", len(letters), list({r.value for r in letters}), set(bad)),
        check("dead letters by origin (distinct)", len(letters), list(found), set(origins)),
    ]


def compare_views(deployment: Deployment, reference: Reference, folder: Path) -> dict[str, dict[str, int]]:
    """Each view against the view of an uninterrupted run: differing rows per table, rows compared."""
    result: dict[str, dict[str, int]] = {}
    for authority, engine in deployment.engines.items():
        calm = make_engine(f"sqlite:///{folder / f'reference-{authority.slug}.sqlite'}")
        build_reference_view(calm, authority, deployment.conventions_of(authority), reference)
        rows, calm_rows = comparable(engine, deployment.aggregated), comparable(calm, deployment.aggregated)
        result[str(authority)] = {**differences(rows, calm_rows), "rows compared": sum(len(v) for v in rows.values())}
        calm.dispose()
    return result


# --------------------------------------------------------------------------- the run


@dataclass
class ChaosReport:
    """Everything a chaos run did and found."""

    events: int = 0
    bad: int = 0
    copies: int = 0
    rounds: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    kills_at_work: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    views: dict[str, dict[str, int]] = field(default_factory=dict)
    topics: list[TopicCheck] = field(default_factory=list)
    pause: PauseEpisode | None = None
    takeover: Takeover | None = None
    recovery_seconds: float = 0.0
    uncommitted: dict[str, int] = field(default_factory=dict)
    status_end: str = ""
    seconds: float = 0.0

    @property
    def differences(self) -> int:
        """Differing rows over every view."""
        return sum(n for tables in self.views.values() for name, n in tables.items() if name != "rows compared")

    @property
    def data_ok(self) -> bool:
        """Nothing lost, nothing doubled: no difference in any view, every topic check passed, the
        takeover (if any) completed."""
        took_over = self.takeover is None or self.takeover.reassigned_after is not None
        return bool(self.views) and self.differences == 0 and all(t.ok for t in self.topics) and took_over

    @property
    def ok(self) -> bool:
        """The data checks passed and the processor committed all it processed (its lag went back to 0)."""
        lag_back = self.takeover is None or self.takeover.lag_zero_after is not None
        return self.data_ok and lag_back and not self.uncommitted and not (self.pause and self.pause.uncommitted)

    def lines(self) -> Iterator[str]:
        """The report, line by line."""
        yield (
            f"{self.events:,} source events ({self.bad} bad) + {self.copies:,} copies sent again; "
            f"{self.rounds} rounds, {sum(self.kills.values())} kills ({sum(self.kills_at_work.values())} at work), "
            f"{sum(self.crashes.values())} exits nobody asked for; {self.seconds:.0f} s"
        )
        for name, n in sorted(self.kills.items()):
            yield f"  killed {name}: {n} times ({self.kills_at_work[name]} at work)"
        if p := self.pause:
            yield f"broker paused {p.seconds:.1f} s with {p.produced:,} events produced meanwhile"
            yield f"  status during the pause: {p.status_during}"
            yield f"  status at the resume: {p.status_resumed}"
            yield f"  status after recovery: {p.status_after}"
            yield f"  processor verdict and lag, sampled each second: {p.timeline}"
            yield f"  processor lag peak {p.max_lag:,}; all applied again {p.recovered_after:.1f} s after the resume"
            if p.uncommitted:
                yield f"  PROCESSOR OFFSETS NOT COMMITTED to the end after the pause: {p.uncommitted}"
        if t := self.takeover:
            yield (
                f"takeover: consumed by each worker before the kill {t.consumed_before}; {t.killed} killed; "
                f"{t.survivor} reassigned after {_seconds(t.reassigned_after)}; "
                f"raw topic committed to its end after {_seconds(t.lag_zero_after)}"
            )
        yield f"recovery after the last fault: {self.recovery_seconds:.0f} s; then status: {self.status_end}"
        if self.uncommitted:
            yield (
                f"PROCESSOR OFFSETS NOT COMMITTED to the end once all was applied and quiet: {self.uncommitted} "
                "(records past the committed offset: its lag does not go back to 0)"
            )
        for topic_check in self.topics:
            yield topic_check.line()
        for authority, tables in self.views.items():
            diff = {k: v for k, v in tables.items() if k != "rows compared" and v}
            yield f"view {authority}: {tables['rows compared']:,} rows compared, differences: {diff or 0}"
        verdict = "OK" if self.ok else "DATA OK, LAG NOT RECOVERED" if self.data_ok else "FAILED"
        yield f"DIFFERENCES: {self.differences}  ->  {verdict}"


def _seconds(value: float | None) -> str:
    return "NEVER" if value is None else f"{value:.1f} s"


def run_chaos(
    plan: ChaosPlan, settings: Settings, conventions_dir: Path, broker: EmbeddedBroker | None = None, say: Say = print
) -> ChaosReport:
    """The whole run on ``settings``' broker (``broker``: its handle, for the pause)."""
    started = time.monotonic()
    rng = random.Random(plan.seed)
    report = ChaosReport(rounds=plan.rounds)
    deployment = deploy(settings, conventions_dir, plan)
    try:
        stream, bad, reference = prepare(deployment, plan, rng, say)
        report.events, report.bad = len(stream), len(bad)
        pause = plan.pause_seconds > 0 and broker is not None
        planned = waves(stream, plan.rounds + pause + plan.takeover, bad, rng, plan.disorder)
        report.copies = sum(len(w.frames) - w.fresh for w in planned)
        takeover_wave = planned.pop() if plan.takeover else None
        pause_wave = planned.pop(len(planned) // 2) if pause else None
        for number, wave in enumerate(planned, 1):
            if pause_wave is not None and number == len(planned) // 2 + 1:
                say(f"broker pause: {len(pause_wave.frames):,} events, broker frozen {plan.pause_seconds:.0f} s")
                assert broker is not None
                report.pause = broker_pause(deployment, broker, pause_wave, plan.pause_seconds, plan.quiet_seconds, say)
            say(f"round {number}/{len(planned)}: {len(wave.frames):,} events{f' ({wave.note})' if wave.note else ''}")
            report.kills_at_work.update(kill_round(deployment, wave, rng, plan))
        if takeover_wave is not None:
            say(f"takeover: a second processor worker; {len(takeover_wave.frames):,} events; one worker killed")
            report.takeover = takeover(deployment, takeover_wave, rng)
        say("recovering: every group to the end of its topics")
        recovery = wait_recovered(deployment, say, plan.quiet_seconds, plan.recovery_timeout)
        report.recovery_seconds, report.uncommitted = recovery.seconds, recovery.uncommitted
        report.status_end = run_status(settings, 120, "end")
        deployment.stop()
        report.topics = [audit_check(settings, reference), *deadletter_checks(settings, bad)]
        report.views = compare_views(deployment, reference, settings.data_dir)
    finally:
        deployment.stop()
        for child in [*deployment.children(), *deployment.retired]:
            report.kills[child.name] += child.kills
            report.crashes[child.name] += child.crashes
    report.seconds = time.monotonic() - started
    return report


def prepare(
    deployment: Deployment, plan: ChaosPlan, rng: random.Random, say: Say
) -> tuple[list[Frame], frozenset[bytes], Reference]:
    """The source stream (valid events with bad records among them) and the uninterrupted run's result."""
    geography = load_geography()
    s = deployment.settings
    index = ConventionIndex.build(in_force(read_histories(s)), master_key(s))
    pipeline = build_pipeline(s, geography, index)
    records = simulated_records(geography, plan.departements, plan.events - plan.bad, plan.scale, plan.seed)
    bad = bad_frames(records, plan.bad, rng, pipeline.accept)
    stream = interleave(encode_records(records), bad, rng)
    say(f"{len(stream):,} source events ({len(bad)} bad), départements {', '.join(plan.departements)}; "
        "reference run (uninterrupted, in one process)")  # fmt: skip
    return stream, frozenset(v for _, v in bad), reference_run(pipeline, stream)


# --------------------------------------------------------------------------- the command


def chaos(
    events: Annotated[int, typer.Option(help="Source events (bad records included).")] = 200_000,
    rounds: Annotated[int, typer.Option(help="Kill rounds: each kills the processor and every view once.")] = 10,
    bad: Annotated[int, typer.Option(help="Bad records among the events.")] = 240,
    departement: Annotated[list[str] | None, typer.Option("--departement", "-d", help="Simulated territory.")] = None,
    scale: Annotated[float, typer.Option(help="Share of the real number of pupils to simulate.")] = 0.03,
    authority: Annotated[
        list[str] | None, typer.Option("--authority", "-a", help="Views to run (default: all).")
    ] = None,
    pause: Annotated[float, typer.Option(help="Seconds the broker is frozen mid-run (0: none).")] = 20.0,
    takeover_: Annotated[bool, typer.Option("--takeover/--no-takeover", help="Two workers, one killed.")] = True,
    disorder: Annotated[bool, typer.Option(help="Duplicated and reordered waves.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the events and of the kill moments.")] = 2026,
    database_url: Annotated[str | None, typer.Option(help="The views' database (default: SQLite files).")] = None,
) -> None:
    """Kill -9 the processor and the views at random moments, freeze the broker, send duplicates, kill
    one of two workers; then compare every view, the audit and the dead letters with an uninterrupted
    run's (exit 1 on any difference, or if the processor's lag does not return to 0)."""
    base = Settings()
    plan = ChaosPlan(
        events=events, rounds=rounds, bad=bad, departements=tuple(departement or ChaosPlan.departements),
        scale=scale, authorities=tuple(authority or ()), pause_seconds=pause, takeover=takeover_,
        disorder=disorder, seed=seed, database_url=database_url or base.database_url,
    )  # fmt: skip
    run_dir = base.data_dir / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the children and the broker on the way out
    with ExitStack() as stack:
        broker = None
        bootstrap = base.kafka_bootstrap
        if bootstrap is None:
            broker = stack.enter_context(EmbeddedBroker(run_dir / "broker.log"))
            bootstrap = broker.bootstrap
        settings = base.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "kafka_idempotence": base.kafka_idempotence if base.kafka_bootstrap else False,
                "allow_dev_key": base.allow_dev_key or base.kafka_bootstrap is None,
                "topic_prefix": f"chaos{uuid.uuid4().hex[:6]}",
                "data_dir": run_dir,
                "database_url": plan.database_url,
            }
        )
        typer.echo(f"chaos run in {run_dir} (broker {bootstrap}, topics {settings.topic_prefix}.*)")
        report = run_chaos(plan, settings, base.conventions_dir, broker, say=typer.echo)
    for line in report.lines():
        typer.echo(line)
    with suppress(OSError):
        (run_dir / "report.txt").write_text("\n".join(report.lines()) + "\n", encoding="utf-8")
    raise typer.Exit(0 if report.ok else 1)


def register(cli: typer.Typer) -> None:
    """Add ``scolaflux chaos`` to the root CLI."""
    cli.command()(chaos)
