"""Bad input in a stream of good input, through the processor's pure core (``Pipeline.process``).

Valid events, garbage bytes, mutated records and events from unknown communes, in any order: each
bad record becomes exactly one dead-letter record carrying its raw bytes, its key and a reason
(never the pupil's INE or names), and each valid event gives exactly what it gives on its own.
The example conventions of ``conventions/`` route, over the real geography.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from scolaflux.infra.kafka import ERROR_HEADER, ORIGIN_HEADER, REASON_HEADER
from scolaflux.infra.settings import Settings
from scolaflux.processors.conventions import load_directory
from scolaflux.processors.history import ConventionHistory
from scolaflux.processors.live import in_force
from scolaflux.processors.pipeline import Output, Pipeline
from scolaflux.processors.routing import ConventionIndex
from scolaflux.processors.wiring import build_pipeline, master_key
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.models import Event
from scolaflux.schemas.validation import encode_event

from tests.fuzz.strategies import events, mutated

SETTINGS = Settings(topic_prefix="fuzz", kafka_bootstrap="unused:9092")
CONVENTIONS = Path(__file__).parent.parent / "conventions"
NOW = dt.datetime(2027, 1, 4, 9, tzinfo=dt.UTC)
UNKNOWN_COMMUNES = ["20004", "98735", "99999", "75000"]  # see tests/test_fuzz_events.py


def example_pipeline() -> Pipeline:
    geography = load_geography()
    histories = {c.id: ConventionHistory.first(c) for c in load_directory(CONVENTIONS, geography)}
    index = ConventionIndex.build(in_force(histories), master_key(SETTINGS))
    return dataclasses.replace(build_pipeline(SETTINGS, geography, index), clock=lambda: NOW)


PIPELINE = example_pipeline()


@st.composite
def stream_items(draw: st.DrawFn) -> tuple[str, bytes, Event | None]:
    """(kind, raw bytes, the event behind them if any)."""
    kind = draw(st.sampled_from(["valid", "valid", "garbage", "mutated", "unknown_commune"]))
    if kind == "garbage":
        return kind, draw(st.binary(max_size=200)), None
    if kind == "mutated":
        return kind, draw(mutated()), None
    event = draw(events(years=(2026, 2028)))
    if kind == "unknown_commune":
        pupil = event.pupil.model_copy(update={"residence_commune": draw(st.sampled_from(UNKNOWN_COMMUNES))})
        event = event.model_copy(update={"pupil": pupil})
    return kind, encode_event(event), event


def assert_dead_letter(outputs: list[Output], raw: bytes, key: bytes, origin: str, event: Event | None) -> str:
    """Exactly one dead-letter record, with the raw bytes, the key and a reason; returns the reason."""
    (output,) = outputs
    headers = dict(output.headers)
    assert output.topic == SETTINGS.deadletter_topic and output.value == raw and output.key == key
    assert headers[ORIGIN_HEADER] == origin.encode() and headers[ERROR_HEADER]
    if event is not None:
        for secret in (event.pupil.ine, event.pupil.last_name, event.pupil.first_name):
            assert secret and secret.encode() not in headers[ERROR_HEADER]
    return headers[REASON_HEADER].decode()


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(stream_items(), min_size=1, max_size=12))
def test_bad_records_are_dead_lettered_and_the_good_ones_around_them_untouched(items) -> None:
    alone = [PIPELINE.process(raw, b"k", "alone") if kind == "valid" else None for kind, raw, _ in items]
    for offset, ((kind, raw, event), expected) in enumerate(zip(items, alone, strict=True)):
        origin = f"fuzz.events/0/{offset}"
        outputs = PIPELINE.process(raw, b"k", origin)
        if kind == "valid":
            assert outputs == expected
            assert all(o.topic != SETTINGS.deadletter_topic for o in outputs)
            note(f"valid event with {'some' if outputs else 'no'} outputs")
        elif kind == "unknown_commune":
            assert assert_dead_letter(outputs, raw, b"k", origin, event) == "invalid"
            assert b"not a commune of the reference geography" in dict(outputs[0].headers)[ERROR_HEADER]
        elif outputs and outputs[0].topic == SETTINGS.deadletter_topic:
            assert assert_dead_letter(outputs, raw, b"k", origin, None) in {"decode", "invalid"}
        else:  # a mutation that left a valid event (say, a changed absence reason)
            note("mutation still valid")
