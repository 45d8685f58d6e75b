"""Shared fixtures: one broker per session (embedded Tansu unless SCOLAFLUX_KAFKA_BOOTSTRAP is
set), fresh topics (a uuid prefix) per test, and helpers that await a condition with a deadline."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings as hypothesis_settings
from scolaflux.infra.broker import EmbeddedBroker
from scolaflux.infra.kafka import delivery_topics, ensure_topics, make_consumer, pipeline_topics
from scolaflux.infra.processes import start_processor, stop_process
from scolaflux.infra.settings import Settings
from scolaflux.schemas.models import Event

T = TypeVar("T")

# The suite is a development run, on the embedded broker or a test cluster: the development
# pseudonym key is allowed (test_security_keys.py checks its refusal).
os.environ.setdefault("SCOLAFLUX_ALLOW_DEV_KEY", "true")

# Property-based tests: "ci" (the default) keeps them to seconds; `pytest --hypothesis-profile=deep`
# searches longer. No deadline: a slow example on a loaded machine is not a failure (a hang is,
# through pytest-timeout).
hypothesis_settings.register_profile("ci", max_examples=150, deadline=None, print_blob=True)
hypothesis_settings.register_profile("deep", max_examples=5000, deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker of this test session."""
    given = os.environ.get("SCOLAFLUX_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    with EmbeddedBroker(tmp_path_factory.mktemp("broker") / "broker.log") as broker:
        yield broker.bootstrap


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with a fresh topic prefix (so fresh topics and groups) for this test."""
    embedded = "SCOLAFLUX_KAFKA_BOOTSTRAP" not in os.environ
    return Settings(
        kafka_bootstrap=bootstrap,
        kafka_idempotence=False if embedded else None,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        partitions=3,
        data_dir=tmp_path,
    )


@pytest.fixture
def topics(settings: Settings) -> Callable[..., None]:
    """Create the pipeline topics, plus the delivery topics of the given conventions."""

    def create(*conventions: str) -> None:
        assert settings.kafka_bootstrap
        ensure_topics(
            settings,
            [
                *pipeline_topics(settings),
                *delivery_topics(settings, conventions),
            ],
        )

    return create


EXAMPLE_CONVENTIONS = Path(__file__).parent.parent / "conventions"


@pytest.fixture
def publish_conventions(settings: Settings, topics: Callable[..., None]) -> Callable[..., dict[str, str]]:
    """Publish example conventions of ``conventions/`` by id (the processor routes by them, live);
    returns each one's delivery topic."""
    from scolaflux.processors.conventions import load_convention
    from scolaflux.processors.publish import publish

    def publish_examples(*convention_ids: str) -> dict[str, str]:
        topics()
        chosen = [(cid, load_convention(EXAMPLE_CONVENTIONS / f"{cid}.yaml")) for cid in convention_ids]
        publish(settings, chosen)
        return {cid: settings.delivery_topic(cid) for cid in convention_ids}

    return publish_examples


@pytest.fixture
def processor(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Start the processor (a real faust worker process) when the test asks for it."""
    started = []

    def start() -> None:
        started.append(start_processor(settings, tmp_path / "processor.log"))

    yield start
    for process in started:
        stop_process(process)


def wait_for(condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str = "") -> T:
    """Poll ``condition`` until it returns a truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or condition}; last: {value!r}")
        time.sleep(interval)


def read_topic(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """Read ``count`` records from the start of every partition of ``topic`` (no group join)."""
    from scolaflux.infra.topics import assign_all

    consumer = make_consumer(settings, None)
    try:
        assign_all(consumer, topic)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=200).values():
                records.extend(messages)
        return records
    finally:
        consumer.close()


def make_event(
    event_type: str = "enrolment",
    *,
    ine: str = "123456789AB",
    commune: str = "69123",
    school: str = "0690026D",
    payload: dict[str, Any] | None = None,
    **envelope: Any,
) -> Event:
    """A valid event, with sensible defaults, for tests."""
    now = dt.datetime(2026, 9, 1, 8, 0, tzinfo=dt.UTC)
    payloads = {
        "enrolment": {"level": "2nde", "track": "GT", "entry_date": dt.date(2026, 9, 1)},
        "transfer": {"level": "2nde", "exit_date": dt.date(2026, 10, 1), "destination_kind": "unknown"},
        "absence": {"date": dt.date(2026, 10, 5), "half_days": 2, "justified": False, "reason": "unjustified"},
        "correction": {"changed_fields": ["first_name"]},
        "erasure": {"scope": "pupil", "reason": "recorded in error"},
    }
    data = {
        "event_id": uuid.uuid4(),
        "event_type": event_type,
        "event_time": now,
        "recorded_at": now,
        "source": {"system": "SIECLE", "academy": "10"},
        "pupil": {
            "ine": ine,
            "birth_date": dt.date(2011, 5, 4),
            "residence_commune": commune,
            "last_name": "Martin",
            "first_name": "Léa",
            "sex": "F",
        },
        "school": school,
        "school_year": 2026,
        "payload": payload if payload is not None else payloads[event_type],
    }
    data.update(envelope)
    return Event.model_validate(data)
