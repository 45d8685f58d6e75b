"""The processor end to end: real faust workers (``scolaflux process``) on the broker.

A ``ProcessorRig`` is one deployment: fresh topics, conventions published to the conventions
topic, and workers in one consumer group. A run writes events to the raw topic and reads the
audit topic until every expected audit record is there (every delivery and every headcount
movement has one, written in the same acknowledged batch); the rate is taken between the first and
the last audit record seen, so a worker's start and its group join are not counted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...processors.conventions import Convention
from ...processors.publish import publish
from ...processors.wiring import processor_topics
from ...schemas.codec import HEADER_SIZE, delivery_codec
from ..kafka import ensure_topics, pipeline_topics
from ..settings import Settings, settings_env
from .records import Record, Span, end_offsets, produce, read_span
from .workers import Worker, start

WORKER_START_TIMEOUT = 240.0


@dataclass
class ProcessorRig:
    """Topics, published conventions and running workers of one benchmark deployment."""

    settings: Settings
    conventions: Sequence[Convention]
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.settings.kafka_bootstrap is not None
        ensure_topics(self.settings, [*pipeline_topics(self.settings), *processor_topics(self.settings)])
        publish(self.settings, [("benchmark", c) for c in self.conventions])

    @property
    def bootstrap(self) -> str:
        """The broker."""
        assert self.settings.kafka_bootstrap is not None
        return self.settings.kafka_bootstrap

    def start_worker(self) -> Worker:
        """Start one more processor worker (same consumer group)."""
        number = len(self.workers) + 1
        log_path = self.settings.data_dir / f"processor-{number}.log"
        worker = start(["-m", "scolaflux.infra.cli", "process"], settings_env(self.settings), log_path)
        self.workers.append(worker)
        return worker

    def cpu_seconds(self) -> float:
        """The CPU time the workers have used so far, all together."""
        return sum(worker.cpu_seconds() for worker in self.workers)

    def audit_ends(self) -> dict[tuple[str, int], int]:
        """Where the audit topic ends now."""
        return end_offsets(self.bootstrap, [self.settings.audit_topic])

    def run(self, events: Sequence[Record], audits: int, starts: dict[tuple[str, int], int] | None = None) -> Span:
        """Write ``events`` and wait for their ``audits`` audit records; the span they were written in."""
        starts = starts if starts is not None else self.audit_ends()
        produce(self.bootstrap, self.settings.raw_topic, events)
        timeout = WORKER_START_TIMEOUT + len(events) / 500
        return read_span(self.bootstrap, starts, audits, timeout, identity=audit_identity, give_up=self._dead)

    def _dead(self) -> str | None:
        """Why the run cannot finish: a worker that exited, and the last error in its log."""
        dead = [w for w in self.workers if not w.alive()]
        return f"a processor worker exited: {dead[0].failure()}" if dead else None

    def wait_until_quiet(self, quiet: float = 3.0, timeout: float = 120.0) -> None:
        """Wait until no delivery topic grows for ``quiet`` seconds (headcount cells come after the
        audit records: the headcounts work from the movements the pipeline wrote)."""
        topics = [self.settings.delivery_topic(c.id) for c in self.conventions]
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(end_offsets(self.bootstrap, topics).values())
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.5)
        raise TimeoutError(f"delivery topics still growing after {timeout:.0f}s")

    def stop(self) -> list[int]:
        """Stop every worker; their peak resident memory (bytes)."""
        return [worker.stop() for worker in self.workers]


@dataclass
class Delivered:
    """What a deployment delivered, in a form two deployments fed the same events can compare.

    Deliveries of events are compared as a set, their delivery time aside (a record written twice,
    as at-least-once delivery may after a rebalance, is the same delivery: views apply it once).
    Headcount cells (aggregated conventions) are published when a movement changes what a cell
    shows, so which movement publishes which value depends on how the workers interleave pupils:
    what must match there is each cell's final count (``cell_updates`` is not compared).
    """

    events: set[bytes] = field(default_factory=set)
    cell_updates: set[str] = field(default_factory=set, compare=False)
    cells: dict[tuple[str, str, str], int | None] = field(default_factory=dict)
    records: int = field(default=0, compare=False)

    @property
    def total(self) -> int:
        """Distinct deliveries."""
        return len(self.events) + len(self.cell_updates)


def audit_identity(value: bytes) -> bytes:
    """What makes an audit record distinct: its delivery (a re-processed event writes it again).

    The delivery id is the audit schema's first field, a 36-character string: its length byte and
    text follow the single-object header. Read from the bytes, not decoded: decoding every audit
    record took the benchmark ~10 µs of CPU each, beside the workers it measures.
    """
    return value[HEADER_SIZE : HEADER_SIZE + 37]


def compare(first: Delivered, second: Delivered) -> str:
    """Where two deployments' deliveries differ, in words (empty: they do not)."""
    differences = []
    if first.events != second.events:
        only = len(first.events - second.events), len(second.events - first.events)
        differences.append(f"event deliveries: {only[0]} only in the first, {only[1]} only in the second")
    if first.cells != second.cells:
        keys = set(first.cells) | set(second.cells)
        differing = sum(1 for k in keys if first.cells.get(k) != second.cells.get(k))
        differences.append(f"headcount cells: {differing} of {len(keys)} end with different counts")
    return "; ".join(differences)


def delivered(settings: Settings, conventions: Sequence[Convention]) -> Delivered:
    """Everything on the delivery topics of ``conventions`` (each partition read in order)."""
    assert settings.kafka_bootstrap is not None
    topics = [settings.delivery_topic(c.id) for c in conventions]
    ends = end_offsets(settings.kafka_bootstrap, topics)
    span = read_span(settings.kafka_bootstrap, dict.fromkeys(ends, 0), sum(ends.values()), 120, keep=lambda _: True)
    codec = delivery_codec()
    result = Delivered()
    for value in span.values:
        record = codec.decode(value)
        record.pop("delivered_at", None)
        result.records += 1
        aggregate = record.get("aggregate")
        if aggregate is not None:
            result.cell_updates.add(record["delivery_id"])
            result.cells[(record["convention_id"], aggregate["school"], aggregate["level"])] = aggregate["count"]
        else:
            result.events.add(repr(sorted(record.items())).encode())
    return result


_SYNCED = re.compile(r"Successfully synced group \S+-processor with generation (\d+)")


def generation(worker: Worker) -> int | None:
    """The generation of the processor's group (the raw topic's, ``<prefix>-processor``) a worker
    last synced (from its log), if any; the headcounts' group is another one."""
    text = worker.log_path.read_text(encoding="utf-8", errors="replace") if worker.log_path.exists() else ""
    found = _SYNCED.findall(text)
    return int(found[-1]) if found else None


def wait_for_one_generation(workers: Sequence[Worker], timeout: float = WORKER_START_TIMEOUT) -> int:
    """Wait until every worker has synced the same group generation (all of them share the work)."""
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            if not worker.alive():
                raise RuntimeError(f"a processor worker exited: {worker.failure()}")
        generations = {generation(w) for w in workers}
        if len(generations) == 1 and None not in generations:
            return generations.pop()  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not in one group generation after {timeout:.0f}s: {generations}")
        time.sleep(0.5)
