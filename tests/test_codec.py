"""Single-object encoding: round trips, and refusals with a reason."""

import pytest
from scolaflux.schemas.codec import AVRO_DIR, HEADER_SIZE, MARKER, Codec, event_codec, fingerprint, load_schema
from scolaflux.schemas.errors import DecodeError
from scolaflux.schemas.validation import encode_event, parse_event

from tests.conftest import make_event

EVENTS = [
    make_event("enrolment"),
    make_event("transfer"),
    make_event(
        "transfer",
        payload={
            "level": "3e",
            "exit_date": "2026-10-01",
            "destination_kind": "school",
            "destination_school": "0750655E",
        },
    ),
    make_event("absence"),
    make_event("correction", payload={"target_event_id": "x", "level": "1re", "changed_fields": ["level"]}),
    make_event("erasure"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event_type.value)
def test_every_event_type_round_trips(event) -> None:
    assert parse_event(encode_event(event)) == event


def test_encoding_is_single_object() -> None:
    data = encode_event(EVENTS[0])
    assert data[:2] == MARKER
    assert data[2:HEADER_SIZE] == fingerprint(load_schema(AVRO_DIR / "event.avsc"))


def test_fingerprint_matches_the_avro_specification() -> None:
    # Avro's reference value for the schema "null": 0x63dd24e7cc258f8a, written little-endian.
    assert fingerprint("null").hex() == "8a8f25cce724dd63"


@pytest.mark.parametrize("cut", [0, 1, 5, HEADER_SIZE, HEADER_SIZE + 3, -1])
def test_truncated_bytes_are_refused(cut: int) -> None:
    data = encode_event(EVENTS[0])
    with pytest.raises(DecodeError):
        event_codec().decode(data[:cut])


def test_unknown_fingerprint_is_refused_by_name() -> None:
    data = bytearray(encode_event(EVENTS[0]))
    data[2:HEADER_SIZE] = b"\x00" * 8
    with pytest.raises(DecodeError, match="unknown schema fingerprint 0000000000000000"):
        event_codec().decode(bytes(data))


def test_trailing_garbage_is_refused() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        event_codec().decode(encode_event(EVENTS[0]) + b"\x00\x01")


def test_codec_reads_an_older_schema_version() -> None:
    old = {"type": "record", "name": "Thing", "fields": [{"name": "a", "type": "string"}]}
    new = {
        "type": "record",
        "name": "Thing",
        "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": ["null", "int"], "default": None}],
    }
    written = Codec(old).encode({"a": "x"})
    assert Codec(new, history=[old]).decode(written) == {"a": "x", "b": None}
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        Codec(new).decode(written)
