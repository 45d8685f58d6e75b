"""The processor's outputs, pinned: the same input and clock give byte-for-byte the same records.

A few thousand simulated events (every event type, normalisable values, and bad records that go to
the dead-letter topic) go through ``Pipeline.process`` routing through the benchmark's 300
synthetic conventions and the example conventions of ``conventions/``, live and in a backfill.
``tests/data/pipeline_pin.txt`` holds, per input, a digest of the input and of its outputs (topic,
key, value, headers), written by the implementation before the core was made faster (commit
f42545f). When the inputs change (simulator, geography, conventions), the digest of the input says
so: regenerate the file from that commit with ``python -m tests.test_pipeline_pin``, never from a
changed core.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scolaflux.infra.bench.conventions import covered_communes, synthetic_conventions
from scolaflux.infra.settings import Settings
from scolaflux.processors.conventions import load_directory
from scolaflux.processors.history import ConventionHistory
from scolaflux.processors.pipeline import Output, Pipeline
from scolaflux.processors.routing import ConventionIndex
from scolaflux.processors.wiring import build_pipeline, master_key
from scolaflux.producers.simulator import Simulator, avro_datum
from scolaflux.schemas.codec import event_codec
from scolaflux.schemas.geography import load_geography

PIN = Path(__file__).parent / "data" / "pipeline_pin.txt"
SETTINGS = Settings(topic_prefix="pin", kafka_bootstrap="unused:9092")
CONVENTIONS = Path(__file__).parent.parent / "conventions"
NOW = dt.datetime(2026, 10, 5, 8, 30, 12, 345678, tzinfo=dt.UTC)
EXAMPLE_COMMUNES = ["69259", "69266", "69381", "42218", "44109", "44162", "75115"]
BACKFILLED = 300


def _mutations() -> list[tuple[str, Any]]:
    """(name, change): each change takes a record (codec shape) and gives the one to encode, or bytes."""

    def pupil(**changes: Any) -> Any:
        return lambda r: {**r, "pupil": {**r["pupil"], **changes}}

    def payload(**changes: Any) -> Any:
        return lambda r: {**r, "payload": {**r["payload"], **changes}}

    return [
        ("truncated", lambda r: event_codec().encode(avro_datum(r))[:-3]),
        ("garbage", lambda r: b"not an avro record"),
        ("ine-format", pupil(ine="12345")),
        ("ine-lower-spaced", lambda r: pupil(ine=f"  {r['pupil']['ine'].lower()} ")(r)),
        ("uai-check-letter", lambda r: {**r, "school": r["school"][:7] + ("A" if r["school"][7] != "A" else "B")}),
        ("uai-lower", lambda r: {**r, "school": f" {r['school'].lower()}"}),
        ("unknown-commune", pupil(residence_commune="99999")),
        ("commune-format", pupil(residence_commune="6912")),
        ("born-after", pupil(birth_date=dt.date(2027, 1, 1))),
        ("born-1980", pupil(birth_date=dt.date(1980, 1, 1))),
        ("event-id", lambda r: {**r, "event_id": "not-a-uuid"}),
        ("event-id-upper", lambda r: {**r, "event_id": r["event_id"].upper()}),
        ("academy", lambda r: {**r, "source": {**r["source"], "academy": "1"}}),
        ("school-year", lambda r: {**r, "school_year": 1980}),
        ("level", payload(level="7e")),
        ("names-empty", pupil(last_name="", first_name=None, sex=None)),
        ("absence-reason", payload(justified=True, reason="unjustified")),
        ("transfer-no-school", payload(destination_kind="school", destination_school=None)),
    ]


def pinned_inputs() -> Iterator[tuple[str, bytes, bytes]]:
    """(label, key, raw value) of every input, in order: deterministic for a given simulator."""
    geography = load_geography()
    communes = covered_communes(geography, synthetic_conventions(geography, 300))[::40] + EXAMPLE_COMMUNES
    records = list(Simulator(geography, communes, seed=7, pupils_per_commune=12, days=120).records())
    absences = 0
    mutations = _mutations()
    for number, record in enumerate(records):
        if record["event_type"] == "absence":
            absences += 1
            if absences % 10:
                continue
        key = record["pupil"]["ine"].encode()
        yield f"{number}", key, event_codec().encode(avro_datum(record))
        if number % 7 == 0:
            name, change = mutations[number // 7 % len(mutations)]
            changed = change(record)
            raw = changed if isinstance(changed, bytes) else event_codec().encode(avro_datum(changed))
            yield f"{number}:{name}", key, raw


def pinned_pipelines() -> tuple[Pipeline, Pipeline]:
    """The live pipeline and a backfill one, routing through the synthetic and example conventions."""
    geography = load_geography()
    conventions = [*synthetic_conventions(geography, 300), *load_directory(CONVENTIONS, geography)]
    index = ConventionIndex.build([ConventionHistory.first(c) for c in conventions], master_key(SETTINGS))
    live = dataclasses.replace(build_pipeline(SETTINGS, geography, index), clock=lambda: NOW)
    return live, dataclasses.replace(live, mode="backfill")


def digest(data: Any) -> str:
    return hashlib.sha256(repr(data).encode()).hexdigest()[:16]


def outputs_digest(outputs: list[Output]) -> str:
    return digest([(o.topic, o.key, o.value, o.headers) for o in outputs])


def pin_lines() -> Iterator[str]:
    """One line per input and pipeline: label, mode, digest of the input, digest of its outputs, count."""
    live, backfill = pinned_pipelines()
    for number, (label, key, raw) in enumerate(pinned_inputs()):
        for pipeline in (live, backfill) if number < BACKFILLED else (live,):
            outputs = pipeline.process(raw, key, f"pin/0/{number}")
            yield f"{label} {pipeline.mode} {digest((key, raw))} {outputs_digest(outputs)} {len(outputs)}"


def test_outputs_are_byte_for_byte_those_pinned() -> None:
    pinned = PIN.read_text().splitlines()
    lines = list(pin_lines())
    assert len(lines) == len(pinned), "the inputs changed: regenerate the pin from the reference commit"
    kinds = {line.split()[0].partition(":")[2] for line in lines}
    assert len(kinds) > 10, "the dead-letter and normalisation cases are there"
    for line, expected in zip(lines, pinned, strict=True):
        label, mode, source, _, _ = expected.split()
        assert line.split()[:3] == [label, mode, source], f"input {label} changed: regenerate from the reference"
        assert line == expected, f"outputs of input {label} ({mode}) differ from the reference"


if __name__ == "__main__":
    PIN.parent.mkdir(exist_ok=True)
    PIN.write_text("".join(f"{line}\n" for line in pin_lines()))
