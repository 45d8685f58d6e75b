"""``scolaflux chaos`` (``make chaos``): crash, pause and duplicate a running feed, then prove nothing
was lost or doubled.

On a broker of its own (the embedded one, unless ``--bootstrap`` is given), it publishes the example
conventions, runs the processor (a real faust worker, ``scolaflux process``) and one view maintainer
per authority (``scolaflux view run``) as child processes, and sends simulated source events with a
known set of bad records among them, in waves. Then:

- **kills**: in each round a wave is sent, and the processor and every view are each killed with
  SIGKILL at a random moment once they are at work, and restarted at once;
- **duplicates and reordering**: some waves go in another interleaving of pupils, or are followed
  by copies of events already sent (a retry, a second source), shuffled (``chaos_reference.waves``);
- **a broker outage**: mid-run the broker is frozen (SIGSTOP) for ``--pause`` seconds while a wave
  is being produced; ``scolaflux status`` runs during the pause and after it, and a sampler notes
  the processor's lag until it is back to zero;
- **a takeover**: a second processor worker joins the group, one of the two is killed mid-wave and
  not restarted; the other must take over its partitions.

After recovery (every group at the end of its topics), each view is compared with the view of an
uninterrupted run of the same events (``chaos_reference``), the audit topic must hold a record for
every delivery and for nothing else (distinct delivery ids; how many re-sent copies at-least-once
processing left is printed), and the dead-letter topic exactly the bad records (distinct origins).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine

from ..consumers.authority import Authority
from ..consumers.store import load_offsets, make_engine, open_view_engine
from ..processors.conventions import Convention, load_directory
from ..processors.delivery import delivery_id
from ..processors.live import in_force
from ..processors.publish import publish, read_histories
from ..processors.routing import ConventionIndex
from ..processors.topics import end_offsets, partitions_of, read_to_end
from ..processors.wiring import aggregation_topic, build_pipeline, master_key, processor_topics
from ..producers.kafka import EventProducer
from ..schemas.codec import audit_codec, delivery_codec
from ..schemas.geography import load_geography
from .broker import EmbeddedBroker
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
from .lag import LagReader
from .settings import Settings, settings_env
from .status import Sampler

Say = Callable[[str], None]


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
    """Once every view has applied its topics, how long a ready processor must have written nothing
    before its offsets still uncommitted are reported rather than waited for."""


# --------------------------------------------------------------------------- child processes


class Child:
    """One process of the deployment under test: started, killed, restarted; its log kept."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.args, self.env, self.log_path = name, list(args), env, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log_start = 0
        self.starts = self.kills = self.crashes = 0

    def start(self) -> None:
        """Start (again); the log is appended to."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scolaflux.infra.cli", *self.args],
                env=self.env,
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def alive(self) -> bool:
        """Whether it runs now."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut or the OOM killer."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1

    def revive(self) -> bool:
        """Restart it if it exited by itself (counted as a crash); whether it had."""
        if self.process is None or self.alive():
            return False
        self.crashes += 1
        self.start()
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, SIGKILL after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def ready(self) -> bool:
        """Whether a faust worker has said it is ready since its last start (it then processes at once)."""
        return "[^Worker]: Ready" in self.log_since_start()

    def log_since_start(self) -> str:
        """What it logged since its last start."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode("utf-8", errors="replace")


_ASSIGNED = re.compile(r"Setting newly assigned partitions(.*?)for group", re.DOTALL)


def raw_partitions(log: str, raw_topic: str) -> set[int] | None:
    """The raw-topic partitions a faust worker was last assigned, read from its log (None: none yet)."""
    tables = _ASSIGNED.findall(log)
    if not tables:
        return None
    row = re.search(rf"\|\s*{re.escape(raw_topic)}\s*\|\s*\{{([^}}]*)\}}", tables[-1])
    return _partition_set(row.group(1)) if row else set()


def _partition_set(text: str) -> set[int]:
    """``0-2, 5`` → {0, 1, 2, 5}."""
    found: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found


# --------------------------------------------------------------------------- the deployment


@dataclass
class Deployment:
    """The feed under test: settings, conventions, its processor worker(s) and its views."""

    settings: Settings
    conventions: list[Convention]
    env: dict[str, str]
    processors: list[Child] = field(default_factory=list)
    views: dict[Authority, Child] = field(default_factory=dict)
    engines: dict[Authority, Engine] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """The broker."""
        assert self.settings.kafka_bootstrap is not None
        return self.settings.kafka_bootstrap

    def conventions_of(self, authority: Authority) -> list[str]:
        """The ids of the authority's conventions."""
        return sorted(
            c.id for c in self.conventions if (c.authority.level, c.authority.code) == (authority.level, authority.code)
        )

    @property
    def aggregated(self) -> frozenset[str]:
        """Conventions delivering headcount cells rather than events."""
        return frozenset(c.id for c in self.conventions if c.identity == "aggregated")

    def add_processor(self) -> Child:
        """One more processor worker (same consumer group), started."""
        child = Child(
            f"processor-{len(self.processors) + 1}",
            ["process"],
            self.env,
            self._log(f"processor-{len(self.processors) + 1}"),
        )
        child.start()
        self.processors.append(child)
        return child

    def add_view(self, authority: Authority, batch: int) -> None:
        """The view maintainer of one authority, started."""
        args = ["view", "run", str(authority), "--batch-size", str(batch)]
        child = Child(f"view {authority}", args, self.env, self._log(f"view-{authority.slug}"))
        child.start()
        self.views[authority] = child
        engine = open_view_engine(
            self.settings.database_url, self.settings.data_dir / "views", authority, self.settings.topic_prefix
        )
        self.engines[authority] = engine

    def children(self) -> list[Child]:
        """Every process of the deployment."""
        return [*self.processors, *self.views.values()]

    def stop(self) -> None:
        """Stop every process."""
        for child in self.children():
            child.stop()

    def _log(self, name: str) -> Path:
        return self.settings.data_dir / "logs" / f"{name}.log"


def deploy(settings: Settings, conventions_dir: Path, plan: ChaosPlan) -> Deployment:
    """Topics, the example conventions published, the processor and the views started."""
    assert settings.kafka_bootstrap is not None
    ensure_topics(settings.kafka_bootstrap, [*pipeline_topics(settings), *processor_topics(settings)])
    conventions = load_directory(conventions_dir, load_geography())
    publish(settings, [(c.id, c) for c in conventions])
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SCOLAFLUX_")}
    env = {**inherited, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    deployment = Deployment(settings, conventions, env)
    wanted = {Authority.parse(a) for a in plan.authorities}
    every = sorted({Authority(c.authority.level, c.authority.code) for c in conventions}, key=str)
    deployment.add_processor()
    for authority in every:
        if not wanted or authority in wanted:
            deployment.add_view(authority, plan.view_batch)
    return deployment


# --------------------------------------------------------------------------- probes


def output_marks(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> int:
    """A number that grows whenever the processor writes (audit, dead-letter, aggregation topics)."""
    return sum(consumer.end_offsets(partitions).values())


def processor_outputs(deployment: Deployment) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A probe consumer and the partitions of the processor's output topics."""
    s = deployment.settings
    consumer = make_consumer(s, None)
    partitions = [
        tp for t in (s.audit_topic, s.deadletter_topic, aggregation_topic(s)) for tp in partitions_of(consumer, t)
    ]
    return consumer, partitions


def view_mark(engine: Engine, topics: Sequence[str]) -> int:
    """A number that grows whenever the view commits a batch (the offsets stored with it)."""
    return sum(sum(load_offsets(engine, topic).values()) for topic in topics)


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --------------------------------------------------------------------------- faults


def produce(deployment: Deployment, frames: Sequence[Frame]) -> None:
    """Send frames to the raw topic through the producers' idempotent producer, acknowledged."""
    with EventProducer(deployment.settings) as producer:
        producer.send_frames(frames)
        producer.flush()


def kill_when_working(
    child: Child, mark: Callable[[], int], start: int, delay: float, give_up: Callable[[], bool]
) -> bool:
    """Wait until ``child`` has done some work (``mark`` moved from ``start``) or ``give_up`` says so,
    wait ``delay`` more, SIGKILL it and start it again. Whether it had been working."""
    worked = wait_until(lambda: mark() != start or give_up(), timeout=180.0) and mark() != start
    time.sleep(delay)  # the random moment, on purpose: inside a batch or between two
    child.kill()
    child.start()
    return worked


def kill_round(deployment: Deployment, wave: Wave, rng: random.Random, plan: ChaosPlan) -> Counter[str]:
    """Send a wave, then kill the processor and every view once each at a random moment of their work.

    Views that get nothing to do this round are killed anyway, a few seconds after the processor."""
    for child in deployment.children():
        child.revive()
    delays = {child.name: rng.uniform(0, plan.max_kill_delay) for child in deployment.children()}
    consumer, partitions = processor_outputs(deployment)
    processor = deployment.processors[0]
    marks: dict[str, Callable[[], int]] = {processor.name: lambda: output_marks(consumer, partitions)}
    for authority, child in deployment.views.items():
        topics = [deployment.settings.delivery_topic(c) for c in deployment.conventions_of(authority)]
        marks[child.name] = lambda e=deployment.engines[authority], t=topics: view_mark(e, t)
    starts = {name: mark() for name, mark in marks.items()}  # before the wave: its first work counts
    produce(deployment, wave.frames)
    processor_killed = threading.Event()
    worked: Counter[str] = Counter()

    def kill(child: Child, give_up: Callable[[], bool], done: threading.Event | None = None) -> None:
        if kill_when_working(child, marks[child.name], starts[child.name], delays[child.name], give_up):
            worked[child.name] += 1
        if done is not None:
            done.set()

    threads = [threading.Thread(target=kill, args=(processor, lambda: False, processor_killed), daemon=True)]
    threads += [
        threading.Thread(target=kill, args=(child, _after(processor_killed, 5.0)), daemon=True)
        for child in deployment.views.values()
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        consumer.close(autocommit=False)
    return worked


def _after(event: threading.Event, seconds: float) -> Callable[[], bool]:
    """A condition that holds ``seconds`` after ``event`` was set."""
    seen: list[float] = []

    def check() -> bool:
        if not event.is_set():
            return False
        if not seen:
            seen.append(time.monotonic())
        return time.monotonic() - seen[0] >= seconds

    return check


@dataclass
class PauseEpisode:
    """What a frozen broker did to the feed, and what ``scolaflux status`` and its sampler saw of it."""

    seconds: float
    produced: int
    status_during: str
    status_resumed: str
    status_after: str
    max_lag: int
    recovered_after: float
    uncommitted: dict[str, int]
    timeline: str
    exited: list[str]


def broker_pause(
    deployment: Deployment, broker: EmbeddedBroker, wave: Wave, seconds: float, quiet: float, say: Say
) -> PauseEpisode:
    """Freeze the broker mid-wave for ``seconds`` while the feed runs (half the wave is produced
    during the outage); resume; wait until everything is applied again."""
    for child in deployment.children():
        child.revive()
    half = len(wave.frames) // 2
    consumer, partitions = processor_outputs(deployment)
    try:
        before = output_marks(consumer, partitions)
        produce(deployment, wave.frames[:half])
        wait_until(lambda: output_marks(consumer, partitions) != before, timeout=180.0)
    finally:
        consumer.close(autocommit=False)
    watch = LagWatch(deployment.settings)
    watch.start()
    wait_until(lambda: watch.samples, timeout=60.0)
    broker.pause()
    paused_at = time.monotonic()
    producing = threading.Thread(target=produce, args=(deployment, wave.frames[half:]), daemon=True)
    producing.start()
    during = run_status(deployment, timeout=seconds + 90)
    time.sleep(max(0.0, seconds - (time.monotonic() - paused_at)))  # the outage lasts as long as asked
    broker.resume()
    resumed_at = time.monotonic()
    say(f"  broker resumed after {resumed_at - paused_at:.1f} s; status during the pause: {during}")
    resumed = run_status(deployment, timeout=120)
    producing.join()  # every event of the wave acknowledged by the broker
    exited = [child.name for child in deployment.children() if not child.alive()]
    recovery = wait_recovered(deployment, say, quiet, timeout=300.0)
    recovered_after = time.monotonic() - resumed_at
    after = run_status(deployment, timeout=120)
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
        exited=exited,
    )


def _revived(deployment: Deployment) -> bool:
    """Restart whatever exited by itself; always true (to be used inside a condition)."""
    for child in deployment.children():
        child.revive()
    return True


def run_status(deployment: Deployment, timeout: float) -> str:
    """``scolaflux status --json`` against the deployment: exit code and verdicts, in one line."""
    args = [sys.executable, "-m", "scolaflux.infra.cli", "status", "--json", "--window", "3", "--interval", "1"]
    started = time.monotonic()
    try:
        done = subprocess.run(args, env=deployment.env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    took = time.monotonic() - started
    if done.returncode == 2 or not done.stdout.strip():
        message = done.stderr.decode(errors="replace").strip().splitlines()
        return f"exit {done.returncode} after {took:.0f} s: {message[-1] if message else ''}"
    report = json.loads(done.stdout)
    verdicts = ", ".join(f"{g['group'].split('-', 1)[1]} {g['status']} lag {g['lag']}" for g in report["groups"])
    return f"exit {done.returncode} after {took:.0f} s ({'ALL OK' if report['ok'] else 'NOT OK'}): {verdicts}"


class LagWatch:
    """Samples the deployment's groups every second in a thread, as ``scolaflux monitor`` does, and
    notes the processor's verdict and lag, or that the broker could not be read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.samples: list[tuple[float, str, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(60)

    def timeline(self, paused_at: float, resumed_at: float) -> str:
        """The processor's verdict and lag over time (seconds from the pause), failed samples grouped."""
        parts: list[str] = []
        failures: list[float] = []
        for at, verdict, lag in self.samples:
            if lag is None:
                failures.append(at - paused_at)
                continue
            if failures:
                parts.append(f"{failures[0]:+.0f}..{failures[-1]:+.0f} s: {len(failures)} failed ({verdict})")
                failures = []
            parts.append(f"{at - paused_at:+.0f} s {verdict} {lag}")
        if failures:
            parts.append(f"{failures[0]:+.0f}..{failures[-1]:+.0f} s: {len(failures)} failed")
        return f"(resumed at +{resumed_at - paused_at:.0f} s) " + "; ".join(parts)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with LagReader(self.settings) as reader:
                    sampler = Sampler(self.settings, reader, max_samples=5)
                    while not self._stop.is_set():
                        self._sample(sampler)
                        self._stop.wait(1.0)
            except Exception as error:  # the broker is away: note it, try again
                self.samples.append((time.monotonic(), type(error).__name__, None))
                self._stop.wait(1.0)

    def _sample(self, sampler: Sampler) -> None:
        began = time.monotonic()
        sampler.sample()
        processor = next((g for g in sampler.report().groups if g.role == "processor"), None)
        if processor is not None:
            self.samples.append((began, processor.status, processor.lag))


@dataclass
class Takeover:
    """Two workers in one group, one killed: who held which raw partitions, and how long the takeover took."""

    killed: str
    survivor: str
    killed_had: set[int]
    survivor_had: set[int]
    survivor_has: set[int]
    seconds: float | None


def takeover(deployment: Deployment, wave: Wave, rng: random.Random, say: Say) -> Takeover:
    """A second worker joins; once the two share the raw partitions, a wave is sent and one of them
    is killed mid-wave, not restarted; the other must end up with every partition."""
    raw = deployment.settings.raw_topic
    every = set(range(deployment.settings.partitions))
    first = deployment.processors[0]
    first.revive()
    second = deployment.add_processor()

    def shares() -> tuple[set[int], set[int]] | None:
        a, b = raw_partitions(first.log_since_start(), raw), raw_partitions(second.log_since_start(), raw)
        if a and b and not a & b and a | b == every:
            return a, b
        return None

    if not wait_until(shares, timeout=240.0, interval=0.5):
        raise RuntimeError("the two processor workers never shared the raw partitions")
    split = shares()
    assert split is not None
    victim, survivor = (first, second) if rng.random() < 0.5 else (second, first)
    had = dict(zip((first.name, second.name), split, strict=True))
    say(f"  {first.name} holds {sorted(split[0])}, {second.name} holds {sorted(split[1])}")
    consumer, partitions = processor_outputs(deployment)
    try:
        before = output_marks(consumer, partitions)
        produce(deployment, wave.frames)
        wait_until(lambda: output_marks(consumer, partitions) != before, timeout=180.0)
    finally:
        consumer.close(autocommit=False)
    time.sleep(rng.uniform(0, 1.0))
    victim.kill()
    killed_at = time.monotonic()
    took_over = wait_until(
        lambda: raw_partitions(survivor.log_since_start(), raw) == every, timeout=240.0, interval=0.5
    )
    return Takeover(
        killed=victim.name,
        survivor=survivor.name,
        killed_had=had[victim.name],
        survivor_had=had[survivor.name],
        survivor_has=raw_partitions(survivor.log_since_start(), raw) or set(),
        seconds=time.monotonic() - killed_at if took_over else None,
    )


# --------------------------------------------------------------------------- recovery and checks


@dataclass(frozen=True)
class Progress:
    """Where the feed stands, against the exact log ends (a fetch's high watermark): records past the
    processor's committed offsets on each of its input partitions, records each view has not applied,
    and how many records the processor has written in all (to see when it has stopped writing)."""

    uncommitted: dict[str, int]
    unapplied: dict[str, int]
    written: int

    def behind(self) -> str:
        """What is behind, in one line."""
        parts = [f"processor {sum(self.uncommitted.values()):,}"] if self.uncommitted else []
        return ", ".join(parts + [f"{name} {n:,}" for name, n in self.unapplied.items()])


def progress(deployment: Deployment, reader: LagReader) -> Progress:
    """Read where the processor and every view stand."""
    s = deployment.settings
    probe = make_consumer(s, None)
    try:
        inputs = [tp for t in (s.raw_topic, aggregation_topic(s)) for tp in partitions_of(probe, t)]
        topics = [s.delivery_topic(c.id) for c in deployment.conventions] + [s.audit_topic, s.deadletter_topic]
        outputs = [tp for t in topics for tp in partitions_of(probe, t)]
    finally:
        probe.close(autocommit=False)
    ends = end_offsets(s, inputs + outputs)
    committed = reader.committed(s.processor_group_id, [(tp.topic, tp.partition) for tp in inputs])
    uncommitted = {f"{tp.topic}/{tp.partition}": ends[tp] - committed.get((tp.topic, tp.partition), 0) for tp in inputs}
    unapplied: dict[str, int] = {}
    for authority, engine in deployment.engines.items():
        mine = {s.delivery_topic(c) for c in deployment.conventions_of(authority)}
        applied = {topic: load_offsets(engine, topic) for topic in mine}
        unapplied[f"view {authority}"] = sum(
            ends[tp] - applied[tp.topic].get(tp.partition, 0) for tp in outputs if tp.topic in mine
        )
    return Progress(
        {k: n for k, n in uncommitted.items() if n > 0},
        {k: n for k, n in unapplied.items() if n > 0},
        sum(ends[tp] for tp in inputs + outputs if tp.topic != s.raw_topic),
    )


@dataclass(frozen=True)
class Recovery:
    """How long the feed took to apply everything, and the processor's input partitions whose
    committed offsets had still not reached the log end once everything was applied and nothing had
    been written for ``quiet`` seconds (a worker that processed its input but does not commit it)."""

    seconds: float
    uncommitted: dict[str, int]


def wait_recovered(deployment: Deployment, say: Say, quiet: float, timeout: float) -> Recovery:
    """Restart whatever exited by itself, and wait until every view has applied its topics and the
    processor has committed its input (or, with the views applied, has written nothing for ``quiet``
    seconds since it was last ready: then its uncommitted partitions are reported, not waited for)."""
    started = time.monotonic()
    said, quiet_since, written = started, started, -1
    last: Progress | None = None
    with LagReader(deployment.settings) as reader:
        while time.monotonic() - started < timeout:
            _revived(deployment)
            if not any(p.alive() for p in deployment.processors):
                deployment.processors[-1].revive()
            last = progress(deployment, reader)
            if last.written != written or not all(p.ready() for p in deployment.processors if p.alive()):
                written, quiet_since = last.written, time.monotonic()
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


@dataclass
class TopicCheck:
    """A topic that must hold one distinct record per expected item: how many it holds, how many of
    them are distinct, and the expected items missing or the unexpected ones found."""

    name: str
    records: int
    distinct: int
    expected: int
    missing: int
    unexpected: int

    @property
    def ok(self) -> bool:
        """Nothing missing, nothing unexpected."""
        return self.missing == 0 and self.unexpected == 0

    def line(self) -> str:
        """One line for the report."""
        copies = self.records - self.distinct
        return (
            f"{self.name}: {self.records:,} records, {self.distinct:,} distinct ({copies:,} re-sent copies), "
            f"expected {self.expected:,}: missing {self.missing}, unexpected {self.unexpected}"
        )


def check(name: str, records: int, found: set[object], expected: set[object]) -> TopicCheck:
    """Compare distinct items found with those expected."""
    return TopicCheck(name, records, len(found), len(expected), len(expected - found), len(found - expected))


def audit_checks(deployment: Deployment, reference: Reference) -> list[TopicCheck]:
    """The audit topic against the reference run's deliveries, and against what the deployment's own
    delivery and aggregation topics hold (every delivery audited, nothing audited that was not delivered)."""
    s = deployment.settings
    audit = audit_codec()
    audited = [audit.decode(r.value)["delivery_id"] for r in read_to_end(s, s.audit_topic)]
    codec = delivery_codec()
    delivered: set[object] = set()
    copies = 0
    for convention in sorted({c.id for c in deployment.conventions} - deployment.aggregated):
        ids = [codec.decode(r.value)["delivery_id"] for r in read_to_end(s, s.delivery_topic(convention))]
        copies += len(ids) - len(set(ids))
        delivered.update(ids)
    for record in read_to_end(s, aggregation_topic(s)):
        move = json.loads(record.value)
        delivered.add(delivery_id(uuid.UUID(move["event_id"]), move["convention_id"]))
    return [
        check("audit vs an uninterrupted run", len(audited), set(audited), set(reference.audit_ids)),
        check("audit vs the deliveries and movements written", len(audited), set(audited), delivered),
    ]


def deadletter_check(deployment: Deployment, bad: frozenset[bytes]) -> list[TopicCheck]:
    """The dead-letter topic against the bad records of the raw topic: by origin (topic/partition/offset)
    and by raw value."""
    s = deployment.settings
    origins = {f"{r.topic}/{r.partition}/{r.offset}" for r in read_to_end(s, s.raw_topic) if r.value in bad}
    letters = list(read_to_end(s, s.deadletter_topic))
    found = {dict(r.headers or []).get(ORIGIN_HEADER, b"").decode() for r in letters}
    return [
        check("dead letters by origin", len(letters), set(found), set(origins)),
        check("dead letters by raw value", len(letters), {r.value for r in letters}, set(bad)),
    ]


def compare_views(deployment: Deployment, reference: Reference, folder: Path) -> dict[str, dict[str, int]]:
    """Each view against the view of an uninterrupted run: differing rows per table."""
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
        """Nothing lost, nothing doubled: no difference in any view, every topic check passed, and
        the takeover (if any) happened."""
        took_over = self.takeover is None or self.takeover.seconds is not None
        return self.differences == 0 and all(t.ok for t in self.topics) and took_over

    @property
    def commits_ok(self) -> bool:
        """The processor committed its whole input once it had processed it (so its lag went back to 0)."""
        return not self.uncommitted and (self.pause is None or not self.pause.uncommitted)

    @property
    def ok(self) -> bool:
        """The data checks passed and the processor's lag recovered."""
        return self.data_ok and self.commits_ok

    def lines(self) -> Iterator[str]:
        """The report, line by line."""
        yield (
            f"{self.events:,} source events ({self.bad} bad) + {self.copies:,} copies sent again, "
            f"{self.rounds} rounds, "
            f"{sum(self.kills.values())} kills ({sum(self.kills_at_work.values())} while at work), "
            f"{sum(self.crashes.values())} exits nobody asked for, {self.seconds:.0f} s"
        )
        for name, n in sorted(self.kills.items()):
            yield f"  killed {name}: {n} times ({self.kills_at_work[name]} at work)"
        if self.pause:
            p = self.pause
            yield f"broker paused {p.seconds:.1f} s with {p.produced:,} events produced meanwhile"
            yield f"  status during the pause: {p.status_during}"
            yield f"  status at the resume: {p.status_resumed}"
            yield f"  status after recovery: {p.status_after}"
            yield f"  processor verdict and lag sampled each second: {p.timeline}"
            yield (
                f"  processor lag peaked at {p.max_lag:,} records; "
                f"all applied again {p.recovered_after:.1f} s after the resume"
            )
            if p.uncommitted:
                yield f"  PROCESSOR OFFSETS NOT COMMITTED to the end: {p.uncommitted} (records past them)"
            if p.exited:
                yield f"  processes that exited during the pause (restarted): {', '.join(p.exited)}"
        if self.takeover:
            t = self.takeover
            seconds = f"in {t.seconds:.1f} s" if t.seconds is not None else "NEVER"
            yield (
                f"takeover: {t.killed} (partitions {sorted(t.killed_had)}) killed; {t.survivor} went from "
                f"{sorted(t.survivor_had)} to {sorted(t.survivor_has)} {seconds}"
            )
        yield f"recovery after the last fault: {self.recovery_seconds:.0f} s; then status: {self.status_end}"
        if self.uncommitted:
            yield (
                f"PROCESSOR OFFSETS NOT COMMITTED to the end once all was applied and quiet: {self.uncommitted} "
                "(records past the committed offset: the processor's lag does not go back to 0)"
            )
        for check_ in self.topics:
            yield check_.line()
        for authority, tables in self.views.items():
            compared = tables["rows compared"]
            diff = {k: v for k, v in tables.items() if k != "rows compared" and v}
            yield f"view {authority}: {compared:,} rows compared, differences: {diff or 0}"
        verdict = "OK" if self.ok else "FAILED" if not self.data_ok else "DATA OK, LAG NOT RECOVERED"
        yield f"DIFFERENCES: {self.differences}  ->  {verdict}"


def run_chaos(
    plan: ChaosPlan,
    settings: Settings,
    conventions_dir: Path,
    broker: EmbeddedBroker | None = None,
    say: Say = print,
) -> ChaosReport:
    """The whole run on ``settings``' broker (``broker``: its handle, for the pause)."""
    started = time.monotonic()
    rng = random.Random(plan.seed)
    report = ChaosReport(rounds=plan.rounds)
    deployment = deploy(settings, conventions_dir, plan)
    try:
        stream, bad, reference = prepare(deployment, plan, rng, say)
        report.events, report.bad = len(stream), len(bad)
        parts = plan.rounds + (plan.pause_seconds > 0 and broker is not None) + plan.takeover
        planned = waves(stream, parts, bad, rng, plan.disorder)
        report.copies = sum(len(w.frames) - w.fresh for w in planned)
        _faults(deployment, planned, plan, rng, broker, report, say)
        say("recovering: every group to the end of its topics")
        recovery = wait_recovered(deployment, say, plan.quiet_seconds, plan.recovery_timeout)
        report.recovery_seconds, report.uncommitted = recovery.seconds, recovery.uncommitted
        report.status_end = run_status(deployment, timeout=120)
        deployment.stop()
        report.topics = [*audit_checks(deployment, reference), *deadletter_check(deployment, bad)]
        report.views = compare_views(deployment, reference, settings.data_dir)
    finally:
        deployment.stop()
        for child in deployment.children():
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
    bad_list = bad_frames(records, plan.bad, rng, pipeline.accept)
    stream = interleave(encode_records(records), bad_list, rng)
    say(f"{len(stream):,} source events ({len(bad_list)} bad) over départements {', '.join(plan.departements)}; "
        f"reference run (uninterrupted, in one process)")  # fmt: skip
    return stream, frozenset(v for _, v in bad_list), reference_run(pipeline, stream)


def _faults(
    deployment: Deployment,
    planned: list[Wave],
    plan: ChaosPlan,
    rng: random.Random,
    broker: EmbeddedBroker | None,
    report: ChaosReport,
    say: Say,
) -> None:
    """The kill rounds, the broker pause in the middle, the takeover at the end."""
    queue = list(planned)
    takeover_wave = queue.pop() if plan.takeover else None
    pause_wave = queue.pop(len(queue) // 2) if plan.pause_seconds > 0 and broker is not None else None
    for number, wave in enumerate(queue, 1):
        if pause_wave is not None and number == len(queue) // 2 + 1:
            say(f"broker pause: {len(pause_wave.frames):,} events, broker frozen {plan.pause_seconds:.0f} s mid-wave")
            report.pause = broker_pause(deployment, broker, pause_wave, plan.pause_seconds, plan.quiet_seconds, say)  # type: ignore[arg-type]
        note = f" ({wave.note})" if wave.note else ""
        say(f"round {number}/{len(queue)}: {len(wave.frames):,} events{note}")
        report.kills_at_work.update(kill_round(deployment, wave, rng, plan))
    if takeover_wave is not None:
        say(f"takeover: a second processor worker joins; {len(takeover_wave.frames):,} events; one worker killed")
        report.takeover = takeover(deployment, takeover_wave, rng, say)


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
    """Kill -9 the processor and the views at random moments, freeze the broker, send duplicates;
    then compare every view with an uninterrupted run's (exit 1 on any difference)."""
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
                "topic_prefix": f"chaos{uuid.uuid4().hex[:6]}",
                "data_dir": run_dir,
                "database_url": plan.database_url,
                "metrics_port": 0,
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
