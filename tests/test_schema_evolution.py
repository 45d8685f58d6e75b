"""Schema evolution: BACKWARD_TRANSITIVE compatibility is checked, and one real evolution ships.

The event schema went from v1 to v2 by adding ``Enrolment.boarding`` (optional, default null).
Old and new producers and consumers run together: a v1 record reads with today's codec, a v2
record reads with a v1 reader by Avro resolution, and both kinds go through the real processor.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from scolaflux.infra.kafka import make_producer
from scolaflux.infra.settings import Settings
from scolaflux.schemas.codec import AVRO_DIR, HEADER_SIZE, Codec, delivery_codec, event_codec, load_schema
from scolaflux.schemas.compatibility import (
    IncompatibleSchema,
    assert_backward_transitive,
    check_all,
    check_schema,
    compatibility_problems,
    history,
    resolution_problems,
    schema_names,
    structural_problems,
)
from scolaflux.schemas.errors import DecodeError
from scolaflux.schemas.validation import encode_event, parse_event

from tests.conftest import make_event, read_topic

EVENT_V1 = load_schema(AVRO_DIR / "history" / "event.v1.avsc")
LYON = "69123"


def record(*fields: dict[str, Any], name: str = "Thing") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": list(fields)}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Kind", "symbols": list(symbols), **extra}


A = field("a", "string")

# (reader = the newer schema, writer = the older one, a word the problem must contain)
INCOMPATIBLE = {
    "new field without default": (record(A, field("b", "int")), record(A), "b"),
    "type change string to int": (record(field("a", "int")), record(A), "int"),
    "narrowing long to int": (record(field("n", "int")), record(field("n", "long")), "int"),
    "enum symbol removed": (
        record(field("k", enum("school", "commune"))),
        record(field("k", enum("school", "commune", "unknown"))),
        "unknown",
    ),
    "union branch removed": (
        record(field("v", ["null", "string"])),
        record(field("v", ["null", "string", "int"])),
        "int",
    ),
    "optional made required": (record(field("v", "string")), record(field("v", ["null", "string"])), "null"),
    "renamed without alias": (record(field("b", "string")), record(A), "b"),
    "record renamed": (record(A, name="Other"), record(A), "name_mismatch"),
}

COMPATIBLE = {
    "new optional field": (record(A, field("b", ["null", "int"], default=None)), record(A)),
    "field removed": (record(A), record(A, field("b", "int"))),
    "promotion int to long": (record(field("n", "long")), record(field("n", "int"))),
    "promotion int to double": (record(field("n", "double")), record(field("n", "int"))),
    "promotion string to bytes": (record(field("s", "bytes")), record(field("s", "string"))),
    "enum symbol added": (record(field("k", enum("a", "b", "c"))), record(field("k", enum("a", "b")))),
    "enum symbol removed, with an enum default": (
        record(field("k", enum("a", "b", default="a"))),
        record(field("k", enum("a", "b", "c"))),
    ),
    "union branch added": (record(field("v", ["null", "string", "int"])), record(field("v", ["null", "string"]))),
    "renamed with an alias": (record(field("b", "string", aliases=["a"])), record(A)),
}


# --- the shipped schemas ---------------------------------------------------------------------


def test_the_shipped_schemas_are_backward_transitive() -> None:
    assert check_all() == []
    assert_backward_transitive()


def test_every_schema_keeps_its_history() -> None:
    assert {"event", "delivery"} <= set(schema_names())
    for name in schema_names():
        versions = history(name)
        assert [v.number for v in versions] == list(range(1, len(versions) + 1)), name
    assert [v.number for v in history("event")] == [1, 2]  # the evolution shipped below


def test_the_codecs_know_every_version() -> None:
    v1_bytes = Codec(EVENT_V1).encode(_v1_record(make_event("absence")))
    assert v1_bytes[2:HEADER_SIZE] != encode_event(make_event("absence"))[2:HEADER_SIZE]
    assert parse_event(v1_bytes).event_type.value == "absence"
    assert delivery_codec().name == "Delivery"


# --- the checker on deliberate changes -------------------------------------------------------


@pytest.mark.parametrize(("reader", "writer", "word"), INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_an_incompatible_change_is_caught_by_both_checks(reader: dict, writer: dict, word: str) -> None:
    structural = structural_problems(reader, writer)
    by_example = resolution_problems(reader, writer, samples=50)
    assert structural and word.lower() in structural[0].lower(), structural
    assert by_example, "fastavro read every sample record"


@pytest.mark.parametrize(("reader", "writer"), COMPATIBLE.values(), ids=COMPATIBLE.keys())
def test_a_compatible_change_passes(reader: dict, writer: dict) -> None:
    assert compatibility_problems(reader, writer, samples=50) == []


def test_a_default_of_the_wrong_type_is_caught() -> None:
    reader = record(A, field("b", ["null", "int"], default="none"))
    assert any("default" in p.lower() for p in compatibility_problems(reader, record(A), samples=5))


@pytest.fixture
def avro_dir(tmp_path: Path) -> Path:
    (tmp_path / "history").mkdir()
    return tmp_path


def write_versions(avro_dir: Path, name: str, *versions: dict[str, Any]) -> None:
    for number, schema in enumerate(versions, start=1):
        (avro_dir / "history" / f"{name}.v{number}.avsc").write_text(json.dumps(schema))
    (avro_dir / f"{name}.avsc").write_text(json.dumps(versions[-1]))


def test_compatibility_is_checked_against_every_older_version(avro_dir: Path) -> None:
    v1 = record(A)
    v2 = record(A, field("b", "int", default=0))
    v3 = record(A, field("b", "int"))  # reads v2 (which has b), not v1 (which has no b)
    write_versions(avro_dir, "thing", v1, v2, v3)
    assert compatibility_problems(v3, v2, samples=20) == []
    problems = check_schema("thing", avro_dir, samples=20)
    assert len(problems) == 2  # one per check, both about v1
    assert all(p.startswith("thing.avsc cannot read data written with history/thing.v1.avsc: ") for p in problems)
    with pytest.raises(IncompatibleSchema, match=r"thing.v1.avsc.*reader_field_missing_default_value"):
        assert_backward_transitive(avro_dir, samples=20)


def test_a_changed_schema_must_be_frozen_as_a_new_version(avro_dir: Path) -> None:
    write_versions(avro_dir, "thing", record(A))
    changed = record(A, field("b", ["null", "int"], default=None))
    (avro_dir / "thing.avsc").write_text(json.dumps(changed))
    assert check_schema("thing", avro_dir, samples=5) == [
        "thing.avsc differs from history/thing.v1.avsc: freeze the new version as history/thing.v2.avsc"
        " (see history/README.md)"
    ]
    documented = {**record(A), "doc": "Documentation may change within a version."}
    (avro_dir / "thing.avsc").write_text(json.dumps(documented))
    assert check_schema("thing", avro_dir, samples=5) == []


def test_a_schema_without_history_or_with_a_gap_is_refused(avro_dir: Path) -> None:
    (avro_dir / "thing.avsc").write_text(json.dumps(record(A)))
    expected = "thing.avsc: no history; freeze it as history/thing.v1.avsc (see history/README.md)"
    assert check_schema("thing", avro_dir) == [expected]
    write_versions(avro_dir, "thing", record(A), record(A))
    (avro_dir / "history" / "thing.v1.avsc").rename(avro_dir / "history" / "thing.v3.avsc")
    assert any("not numbered 1..2 without a gap" in p for p in check_schema("thing", avro_dir, samples=5))


def test_versions_sort_by_number(avro_dir: Path) -> None:
    versions = [record(A, *(field(f"f{i}", ["null", "int"], default=None) for i in range(n))) for n in range(11)]
    write_versions(avro_dir, "thing", *versions)
    assert [v.number for v in history("thing", avro_dir)] == list(range(1, 12))
    assert check_schema("thing", avro_dir, samples=5) == []


def test_the_shipped_history_breaks_the_check_when_it_is_not_kept(tmp_path: Path) -> None:
    shipped = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, shipped)
    (shipped / "history" / "event.v2.avsc").unlink()
    problems = check_schema("event", shipped, samples=20)
    assert problems == [
        "event.avsc differs from history/event.v1.avsc: freeze the new version as history/event.v2.avsc"
        " (see history/README.md)"
    ]


# --- the real evolution: Enrolment.boarding (event schema v2) --------------------------------


def _v1_record(event) -> dict[str, Any]:
    """What a v1 producer writes: the record without the fields v2 added."""
    data = event.to_avro()
    branch, payload = data["payload"]
    data["payload"] = (branch, {k: v for k, v in payload.items() if k != "boarding"})
    return data


def test_the_added_field_is_optional_in_the_schema_and_the_model() -> None:
    (enrolment,) = [b for b in load_schema(AVRO_DIR / "event.avsc")["fields"][-1]["type"] if b["name"] == "Enrolment"]
    boarding = next(f for f in enrolment["fields"] if f["name"] == "boarding")
    assert boarding["type"][0] == "null" and boarding["default"] is None
    assert make_event("enrolment").payload.boarding is None
    assert make_event("enrolment", payload={"level": "6e", "entry_date": "2026-09-01", "boarding": "boarder"})


def test_a_v1_record_decodes_with_the_current_codec_and_the_default_filled() -> None:
    event = make_event("enrolment", commune=LYON)
    v1_bytes = Codec(EVENT_V1).encode(_v1_record(event))
    decoded = event_codec().decode(v1_bytes)
    assert decoded["payload"]["boarding"] is None
    assert parse_event(v1_bytes) == event


def test_a_v2_record_reads_with_a_v1_reader_by_avro_resolution() -> None:
    event = make_event("enrolment", payload={"level": "2nde", "entry_date": "2026-09-01", "boarding": "half_board"})
    v2_bytes = encode_event(event)
    body = io.BytesIO(v2_bytes[HEADER_SIZE:])
    old = schemaless_reader(body, parse_schema(load_schema(AVRO_DIR / "event.avsc")), parse_schema(EVENT_V1))
    assert "boarding" not in old["payload"]
    assert old["payload"]["level"] == "2nde" and old["pupil"]["ine"] == event.pupil.ine
    assert compatibility_problems(EVENT_V1, load_schema(AVRO_DIR / "event.avsc"), samples=100) == []  # forward too


def test_a_consumer_that_knows_only_v1_dead_letters_v2_records_instead_of_misreading_them() -> None:
    """Why readers upgrade before writers: single-object bytes name their writer schema by fingerprint."""
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        Codec(EVENT_V1).decode(encode_event(make_event("enrolment")))


@pytest.mark.broker
def test_v1_and_v2_producers_feed_the_same_processor(settings: Settings, publish_conventions, processor) -> None:
    convention = "commune-69123-instruction"
    publish_conventions(convention, "commune-69266-instruction-absenteisme", "region-84-lyon-lycees-mouvements")
    old = make_event("enrolment", ine="100000001AB", commune=LYON)
    new = make_event(
        "enrolment",
        ine="100000002AB",
        commune=LYON,
        payload={"level": "2nde", "track": "GT", "entry_date": "2026-09-01", "boarding": "boarder"},
    )
    producer = make_producer(settings)
    producer.send(settings.raw_topic, key=b"100000001AB", value=Codec(EVENT_V1).encode(_v1_record(old)))
    producer.send(settings.raw_topic, key=b"100000002AB", value=encode_event(new))
    producer.flush()
    producer.close()
    processor()
    delivered = [delivery_codec().decode(r.value) for r in read_topic(settings, settings.delivery_topic(convention), 2)]
    assert sorted(d["subject"] for d in delivered) == ["100000001AB", "100000002AB"]
    assert {d["level"] for d in delivered} == {"2nde"}
