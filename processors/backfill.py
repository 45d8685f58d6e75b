"""Backfill: replay the retained raw history through one convention alone.

When a convention is signed or widened after the events it covers were processed, the live flow
will not deliver them again: ``backfill`` does, so the authority starts with a complete view.

- **Same deliveries as the live flow.** The same pure pipeline runs, with an index holding that one
  convention; each event is judged by the version in force at its own time, and a delivery gets
  the same deterministic ``delivery_id`` as the live flow would give it.
- **Never twice what the live flow delivers.** The backfill replays the raw topic up to its end as
  of the start (the *targets*), after waiting until the live processor has committed past them:
  from then on the live flow only handles later records. It then reads the delivery ids already on
  the convention's delivery topic (for an aggregated convention, on the audit topic) and skips
  those events. Should a duplicate slip through anyway (say, ``--no-wait`` while the processor is
  behind), it carries the same delivery id, which every view applies once.
- **Resumable.** Progress (the next offset to read and the target of each raw partition) is a
  record on a compacted topic, ``<prefix>.backfill-progress``, keyed by convention; each batch is
  written and acknowledged before its progress record. Run the command again to resume. (Not the
  commit metadata of a consumer group: the embedded broker does not keep it.)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ..infra.kafka import TopicSpec, ensure_topics, make_consumer, make_producer
from ..infra.settings import Settings
from ..infra.topics import end_offsets, partitions_of, read_to_end
from ..schemas.codec import audit_codec, delivery_codec
from ..schemas.errors import RejectedInput, ScolafluxError
from ..schemas.geography import Geography
from .delivery import delivery_id
from .history import ConventionHistory
from .pipeline import Output, Pipeline
from .publish import read_histories
from .routing import ConventionIndex
from .wiring import build_pipeline, master_key

log = logging.getLogger(__name__)

BATCH = 2_000


class BackfillError(ScolafluxError):
    """A backfill cannot run (unknown or ended convention, live processor behind)."""


@dataclass
class BackfillReport:
    """What a backfill run did."""

    convention_id: str
    read: int = 0
    delivered: int = 0
    skipped: int = 0
    rejected: int = 0
    complete: bool = False


def progress_topic(settings: Settings) -> str:
    """The compacted topic of backfill progress records (key: convention id)."""
    return f"{settings.topic_prefix}.backfill-progress"


@dataclass(frozen=True)
class Progress:
    """Where a backfill stands: per raw partition, the next offset to read and the offset to stop at."""

    positions: dict[int, int]
    targets: dict[int, int]

    @property
    def complete(self) -> bool:
        """Whether every partition has been read up to its target."""
        return all(self.positions.get(p, 0) >= target for p, target in self.targets.items())

    def advanced(self, reached: dict[int, int]) -> Progress:
        """This progress with some partitions read further."""
        return Progress({**self.positions, **reached}, self.targets)

    def to_bytes(self) -> bytes:
        """The progress record's value (JSON)."""
        return json.dumps({"positions": self.positions, "targets": self.targets}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Progress:
        """A progress record read back."""
        record = json.loads(data)
        return cls(
            {int(p): o for p, o in record["positions"].items()}, {int(p): o for p, o in record["targets"].items()}
        )


def backfill(
    settings: Settings,
    convention_id: str,
    geography: Geography,
    *,
    wait_for_live: float | None = 120.0,
    restart: bool = False,
    limit: int | None = None,
    progress: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport:
    """Replay the raw topic through one convention; see the module docstring for the guarantees.

    ``wait_for_live``: seconds to wait for the live processor to pass the targets (None: do not
    wait). ``restart``: forget earlier progress and targets. ``limit``: stop after about this many
    raw records (the next run resumes).
    """
    assert settings.kafka_bootstrap is not None
    history = _history(settings, convention_id)
    spec = TopicSpec(progress_topic(settings), 1, {"cleanup.policy": "compact"}, settings.replication_factor)
    ensure_topics(settings, [spec])
    index = ConventionIndex.build([history], master_key(settings))
    pipeline = build_pipeline(settings, geography, index, mode="backfill")
    batch = min(BATCH, limit) if limit else BATCH
    consumer = make_consumer(settings, None, max_poll_records=batch)
    report = BackfillReport(convention_id)
    try:
        partitions = partitions_of(consumer, settings.raw_topic)
        consumer.assign(partitions)
        stored = None if restart else _stored_progress(settings, convention_id)
        state = stored or Progress({}, {tp.partition: end for tp, end in end_offsets(settings, partitions).items()})
        if wait_for_live is not None:
            _wait_for_live(settings, state.targets, wait_for_live)
        done = _already_delivered(settings, history)
        for tp in partitions:
            consumer.seek(tp, state.positions.get(tp.partition, 0))
        run = _Run(settings, convention_id, pipeline, done, report)
        report.complete = _replay(run, consumer, state, limit, progress).complete
    finally:
        consumer.close(autocommit=False)
    return report


def _history(settings: Settings, convention_id: str) -> ConventionHistory:
    history = read_histories(settings).get(convention_id)
    if history is None:
        raise BackfillError(f"convention {convention_id} is not published (publish it first)")
    if history.latest.status == "ended":
        raise BackfillError(f"convention {convention_id} has ended: nothing may be delivered under it")
    return history


def _stored_progress(settings: Settings, convention_id: str) -> Progress | None:
    """The last progress record of a convention's backfill, if any."""
    latest = None
    for record in read_to_end(settings, progress_topic(settings)):
        if record.key == convention_id.encode():
            latest = record.value
    return Progress.from_bytes(latest) if latest else None


def _wait_for_live(settings: Settings, targets: dict[int, int], timeout: float) -> None:
    """Wait until the live processor has committed past every target (it handles what follows)."""
    consumer = make_consumer(settings, settings.processor_group_id)
    deadline = time.monotonic() + timeout
    try:
        while True:
            behind = [
                p
                for p, target in targets.items()
                if target > 0 and (consumer.committed(TopicPartition(settings.raw_topic, p)) or 0) < target
            ]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise BackfillError(
                    f"the live processor has not reached the backfill's targets on {len(behind)} partition(s) of "
                    f"{settings.raw_topic} within {timeout:.0f}s: start it, or pass --no-wait (a record both flows "
                    "deliver then carries the same delivery id, which views apply once)"
                )
            time.sleep(0.5)
    finally:
        consumer.close(autocommit=False)


def _already_delivered(settings: Settings, history: ConventionHistory) -> set[str]:
    """The delivery ids already written for this convention (delivery topic, or audit for aggregated)."""
    if any(v.identity == "aggregated" for v in history.versions):
        records = (audit_codec().decode(r.value) for r in read_to_end(settings, settings.audit_topic))
        return {r["delivery_id"] for r in records if r["convention_id"] == history.id}
    topic = settings.delivery_topic(history.id)
    return {delivery_codec().decode(r.value)["delivery_id"] for r in read_to_end(settings, topic)}


@dataclass
class _Run:
    """One backfill run: the pipeline of the one convention, what to skip, and the report."""

    settings: Settings
    convention_id: str
    pipeline: Pipeline
    done: set[str]
    report: BackfillReport


def _replay(
    run: _Run,
    consumer: KafkaConsumer,
    state: Progress,
    limit: int | None,
    progress: Callable[[BackfillReport], None] | None,
) -> Progress:
    """Read up to the targets in batches; write each batch, then record how far it reached."""
    producer = make_producer(run.settings)
    try:
        while not state.complete:
            if limit is not None and run.report.read >= limit:
                break
            reached: dict[int, int] = {}
            outputs: list[Output] = []
            for tp, messages in consumer.poll(timeout_ms=500).items():
                target = state.targets[tp.partition]
                for m in messages:
                    if m.offset >= target:
                        reached[tp.partition] = target  # done here (offsets may skip past the target)
                        break
                    outputs.extend(_outputs(run, m.value))
                    reached[tp.partition] = m.offset + 1
            if not reached:
                continue
            state = state.advanced(reached)
            _write(producer, outputs)
            _write(producer, [Output(progress_topic(run.settings), run.convention_id.encode(), state.to_bytes())])
            if progress is not None:
                progress(run.report)
        return state
    finally:
        producer.close()


def _outputs(run: _Run, raw: bytes) -> list[Output]:
    """The outputs of one raw record under the one convention, unless already delivered."""
    run.report.read += 1
    try:
        event = run.pipeline.accept(raw)
    except RejectedInput:
        run.report.rejected += 1  # the live flow sent it to the dead-letter topic already
        return []
    if delivery_id(event.event_id, run.convention_id) in run.done:
        run.report.skipped += 1
        return []
    outputs = run.pipeline.route(event)
    run.report.delivered += sum(1 for o in outputs if o.topic != run.pipeline.topics.audit)
    return outputs


def _write(producer: KafkaProducer, outputs: list[Output]) -> None:
    """Send and wait for every acknowledgement (raise the first failure)."""
    futures = [producer.send(o.topic, key=o.key, value=o.value, headers=o.headers) for o in outputs]
    producer.flush()
    for future in futures:
        future.get(timeout=0)
