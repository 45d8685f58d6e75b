"""Fuzzing the codec: whatever the bytes, a record or a ``DecodeError`` with a reason, never
another exception and never a hang (a hang fails the test through pytest-timeout)."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scolaflux.schemas.codec import HEADER_SIZE, MARKER, Codec, delivery_codec, event_codec
from scolaflux.schemas.errors import DecodeError, RejectedInput
from scolaflux.schemas.validation import encode_event, parse_event

from tests.conftest import make_event
from tests.fuzz.strategies import SEEDS, events, mutated

CODECS = {"event": event_codec(), "delivery": delivery_codec()}


def decode_or_refuse(codec: Codec, data: bytes) -> dict | None:
    """The record, or None for a DecodeError that gives a reason; any other exception fails the test."""
    try:
        return codec.decode(data)
    except DecodeError as error:
        assert str(error), "a refusal without a reason"
        assert error.reason == "decode"
        return None


@settings(max_examples=1000)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_a_record_or_a_decode_error(data: bytes) -> None:
    for codec in CODECS.values():
        decode_or_refuse(codec, data)


@settings(max_examples=1000)
@given(st.binary(max_size=400))
def test_arbitrary_datum_after_a_valid_header_is_a_record_or_a_decode_error(body: bytes) -> None:
    for seed in (SEEDS[0], encode_event(make_event("absence"))):
        decode_or_refuse(event_codec(), seed[:HEADER_SIZE] + body)


@settings(max_examples=1500)  # cheap: about a millisecond each
@given(mutated())
def test_mutated_events_are_a_record_or_a_decode_error(data: bytes) -> None:
    decode_or_refuse(event_codec(), data)


@given(mutated(), events())
def test_a_bad_record_leaves_the_next_good_one_untouched(bad: bytes, good) -> None:
    """The codec keeps no state across records: a refused record cannot spoil its neighbour."""
    with contextlib.suppress(RejectedInput):
        parse_event(bad)
    assert parse_event(encode_event(good)) == good


def _long_datum(value: int) -> bytes:
    """The Avro datum of a one-field record holding ``value`` as a plain long (zig-zag varint)."""
    plain = Codec({"type": "record", "name": "R", "fields": [{"name": "x", "type": "long"}]})
    return plain.encode({"x": value})[HEADER_SIZE:]


@pytest.mark.parametrize(
    ("logical", "value"),
    [("date", 2**31 - 1), ("date", -(2**31)), ("timestamp-millis", 2**62), ("timestamp-millis", -(2**62))],
)
def test_a_date_or_timestamp_beyond_python_is_a_decode_error(logical: str, value: int) -> None:
    """Found by fuzzing: fastavro raised OverflowError on such dates, which escaped the codec."""
    base = "int" if logical == "date" else "long"
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": {"type": base, "logicalType": logical}}]}
    codec = Codec(schema)
    header = codec.encode({"x": dt.date(2026, 9, 1) if base == "int" else dt.datetime(2026, 9, 1, tzinfo=dt.UTC)})
    with pytest.raises(DecodeError, match="corrupt R datum"):
        codec.decode(header[:HEADER_SIZE] + _long_datum(value))


@settings(max_examples=1500)
@given(mutated())
@example(MARKER + SEEDS[0][2:HEADER_SIZE] + b"\x02")
def test_mutated_events_through_validation_are_an_event_or_a_rejection(data: bytes) -> None:
    try:
        parse_event(data)
    except RejectedInput as error:
        assert error.reason in {"decode", "invalid"} and str(error)
