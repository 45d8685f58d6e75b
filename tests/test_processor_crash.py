"""Kill -9 real processor workers (``scolaflux process``) while events flow: the processor's group
commits again after every restart (its lag returns to 0), every delivery and audit record is there
once its duplicates are dropped by delivery id (at-least-once), and nothing unexpected is written.
A second worker of the group takes over the partitions of one that is killed (issue #8)."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from scolaflux.infra.kafka import ORIGIN_HEADER, make_consumer
from scolaflux.infra.lag import LagReader, Target
from scolaflux.infra.processes import start_processor, stop_process
from scolaflux.infra.settings import Settings
from scolaflux.infra.topics import assign_all
from scolaflux.processors.delivery import delivery_id
from scolaflux.producers.kafka import EventProducer
from scolaflux.schemas.codec import audit_codec, delivery_codec

from tests.conftest import make_event, wait_for

pytestmark = pytest.mark.broker

CONVENTION = "commune-69123-instruction"  # Lyon's residents: one delivery per enrolment below
LYCEE_DU_PARC = "0690026D"
RATE = 500  # events a second: a restarted worker finds a backlog of its down time
KILLS = 4


class Reader:
    """What the processor wrote so far (a consumer outside any group, from the beginning): the delivery
    ids on the delivery topic and on the audit topic (duplicates included), and the dead letters."""

    def __init__(self, settings: Settings) -> None:
        self.topics = settings.delivery_topic(CONVENTION), settings.audit_topic, settings.deadletter_topic
        self.consumer: KafkaConsumer = make_consumer(settings, None)
        assign_all(self.consumer, list(self.topics))
        self.delivered: list[str] = []
        self.audited: list[str] = []
        self.dead: list = []

    def poll(self) -> Reader:
        delivery, audit, _deadletter = self.topics
        for _ in range(50):
            batch = self.consumer.poll(timeout_ms=100)
            if not batch:
                break
            for tp, messages in batch.items():
                if tp.topic == delivery:
                    self.delivered.extend(delivery_codec().decode(m.value)["delivery_id"] for m in messages)
                elif tp.topic == audit:
                    self.audited.extend(audit_codec().decode(m.value)["delivery_id"] for m in messages)
                else:
                    self.dead.extend(messages)
        return self

    def distinct(self) -> int:
        """Distinct deliveries so far."""
        return len(set(self.poll().delivered))

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def reader(settings: Settings, publish_conventions) -> Iterator[Reader]:
    publish_conventions(CONVENTION)
    opened = Reader(settings)
    yield opened
    opened.close()


class Source:
    """Lyon residents' enrolments at ``RATE`` a second, in a thread, with a few undecodable records:
    the delivery ids expected, and the bad values."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ids: set[str] = set()
        self.bad: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with EventProducer(self.settings) as producer:
            n = 0
            while not self._stop.is_set():
                began = time.monotonic()
                for _ in range(RATE // 10):
                    n += 1
                    event = make_event("enrolment", ine=f"{n:09d}AB", commune="69123", school=LYCEE_DU_PARC)
                    producer.send(event)
                    self.ids.add(delivery_id(event.event_id, CONVENTION))
                if n % (RATE * 5) == 0:
                    value = b"\x00not avro " + uuid.uuid4().bytes
                    producer.send_encoded(b"bad", value)
                    self.bad.add(value)
                producer.flush()
                self._stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


def lag(settings: Settings) -> int | None:
    """The processor group's lag on the raw topic, or None while a partition has no answer."""
    with LagReader(settings) as reader:
        samples = reader.sample(Target(settings.processor_group_id, settings.raw_topic, "processor"))
    if len(samples) < settings.partitions:
        return None
    return sum(s.lag for s in samples.values())


def assert_exactly_once_after_dedupe(reader: Reader, settings: Settings, ids: set[str], bad: set[bytes]) -> None:
    wait_for(lambda: lag(settings) == 0, timeout=180, interval=1.0, what="the processor's lag to return to 0")
    wait_for(lambda: set(reader.poll().delivered) >= ids, timeout=60, what="every delivery")
    wait_for(lambda: set(reader.poll().audited) >= ids, timeout=60, what="every audit record")
    assert set(reader.delivered) == ids and set(reader.audited) == ids  # nothing lost, nothing else delivered
    assert {r.value for r in reader.dead} == bad
    assert len({dict(r.headers)[ORIGIN_HEADER] for r in reader.dead}) == len(bad)  # one raw record each
    print(f"{len(ids)} deliveries: {len(reader.delivered)} delivery and {len(reader.audited)} audit records written")


def alive(process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, f"the worker exited with {process.returncode}: see its log"
    return True


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_worker_killed_and_restarted_at_once_commits_again_and_loses_nothing(
    settings: Settings, reader: Reader, tmp_path: Path
) -> None:
    rng = random.Random(8)
    source = Source(settings)
    process = start_processor(settings, tmp_path / "processor.log")
    try:
        for _ in range(KILLS):
            before = reader.distinct()
            wait_for(
                lambda b=before, p=process: alive(p) and reader.distinct() > b,
                timeout=120,
                what="the worker to deliver",
            )
            time.sleep(rng.uniform(0, 1.0))  # while it works through the backlog of its restart
            kill(process)
            process = start_processor(settings, tmp_path / "processor.log")  # at once
        source.stop()
        assert_exactly_once_after_dedupe(reader, settings, source.ids, source.bad)
    finally:
        source.stop()
        stop_process(process)


def test_a_second_worker_takes_over_when_one_is_killed(settings: Settings, reader: Reader, tmp_path: Path) -> None:
    source = Source(settings)
    workers = [start_processor(settings, tmp_path / f"processor-{n}.log") for n in (1, 2)]
    try:
        wait_for(lambda: reader.distinct() > 0, timeout=120, what="the first deliveries")
        time.sleep(2)
        kill(workers[0])
        before = reader.distinct()
        wait_for(
            lambda: alive(workers[1]) and reader.distinct() > before + RATE * 10,
            timeout=120,
            what="the second worker to deliver alone",
        )
        source.stop()
        assert_exactly_once_after_dedupe(reader, settings, source.ids, source.bad)
        assert alive(workers[1])
    finally:
        source.stop()
        for worker in workers:
            stop_process(worker)
