"""Views figures: deliveries applied per second by a view maintainer, SQLite and PostgreSQL apart.

The deliveries are what the processor's pipeline makes of simulated events (every convention's,
in one topic); each run applies them all to a fresh database with the views' own maintainer
(``consumers.runner.ViewMaintainer``: batches of records applied with their offsets in one
transaction, exactly once by delivery id).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from ...consumers.runner import ViewMaintainer
from ...consumers.store import make_engine, view_url
from ...consumers.views import AuthorityView
from ...processors.pipeline import Pipeline
from ..kafka import TopicSpec, ensure_topics
from ..settings import Settings
from .core import avro_timer
from .records import Record, produce


def deliveries_of(pipeline: Pipeline, events: Sequence[Record]) -> list[Record]:
    """The delivery records (not audits, movements or dead letters) the pipeline makes of ``events``."""
    internal = {pipeline.topics.audit, pipeline.topics.aggregation, pipeline.topics.deadletter}
    return [
        (output.key, output.value)
        for key, value in events
        for output in pipeline.process(value, key, "bench")
        if output.topic not in internal
    ]


def prepare_topic(settings: Settings, deliveries: Sequence[Record]) -> str:
    """Write ``deliveries`` to a fresh delivery topic; returns its name."""
    assert settings.kafka_bootstrap is not None
    topic = settings.delivery_topic("bench-views")
    ensure_topics(settings, [TopicSpec(topic, settings.partitions)])
    produce(settings.kafka_bootstrap, topic, deliveries)
    return topic


def sqlite_engine(work_dir: Path) -> Engine:
    """A fresh SQLite view database (WAL, synchronous=FULL, as the views run)."""
    return make_engine(view_url(None, work_dir, f"bench-{uuid.uuid4().hex[:8]}"))


def postgres_engine(url: str) -> tuple[Engine, str]:
    """A fresh schema of the PostgreSQL database at ``url``: its engine and the schema's name."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    return make_engine(url, schema), schema


def drop_schema(url: str, schema: str) -> None:
    """Drop a schema made by ``postgres_engine``."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


def parallel_rate(settings: Settings, topic: str, work_dir: Path, expected: int, processes: int = 2) -> float:
    """Deliveries applied per second by ``processes`` view maintainers at once, each in a process of
    its own with a SQLite database of its own (as several authorities' views run), all reading
    ``topic`` from its start: every delivery they applied, over the time from the first one's start
    to the last one's end (they start together, once each has its database and schema ready)."""
    context = multiprocessing.get_context("spawn")  # no fork of this process's librdkafka threads
    ready, results = context.Barrier(processes), context.Queue()
    children = [
        context.Process(target=_apply_at_once, args=(settings, topic, work_dir, expected, ready, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        spans = [results.get(timeout=900) for _ in children]
    finally:
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()
    failed = [span for span in spans if isinstance(span, str)]
    if failed:
        raise AssertionError(failed[0])
    applied = sum(span[0] for span in spans)
    return applied / (max(span[2] for span in spans) - min(span[1] for span in spans))


def _apply_at_once(settings: Settings, topic: str, work_dir: Path, expected: int, ready: Any, results: Any) -> None:
    """One of ``parallel_rate``'s views: (applied, start, end) on ``results``, or why it failed."""
    try:
        engine = sqlite_engine(work_dir)
        maintainer = _maintainer(settings, topic, engine)
        ready.wait(120)
        started = time.time()
        applied = _caught_up(maintainer, expected)
        ended = time.time()
        engine.dispose()
        results.put((applied, started, ended))
    except Exception as error:  # reported by the parent
        results.put(f"a view process failed: {error!r}")


@dataclass(frozen=True)
class ApplyRate:
    """Deliveries applied per second, and the CPU time (user + system) of the process applying them
    per delivery, of which so much in Avro decode (fastavro, ``Codec.decode``)."""

    per_second: float
    cpu: float
    avro: float


def apply_rate(settings: Settings, topic: str, engine: Engine, expected: int) -> ApplyRate:
    """How fast a view maintainer in this process applies ``topic`` from its start."""
    maintainer = _maintainer(settings, topic, engine)
    with avro_timer() as avro:
        started, used = time.perf_counter(), time.process_time()
        applied = _caught_up(maintainer, expected)
        elapsed, used = time.perf_counter() - started, time.process_time() - used
    each = max(applied, 1)
    return ApplyRate(applied / elapsed, used / each, avro() / each)


def _maintainer(settings: Settings, topic: str, engine: Engine) -> ViewMaintainer:
    """A view maintainer taking every delivery of ``topic``, under a consumer group of its own."""
    return ViewMaintainer(settings, topic, AuthorityView(None), engine, group_id=f"bench-{uuid.uuid4().hex[:8]}")


def _caught_up(maintainer: ViewMaintainer, expected: int) -> int:
    """Apply everything the topic holds; how many deliveries were applied (all ``expected`` must be)."""
    applied = maintainer.catch_up(timeout=600)
    if applied + maintainer.duplicates != expected:
        raise AssertionError(f"applied {applied} (+{maintainer.duplicates} duplicates) of {expected} deliveries")
    return applied
