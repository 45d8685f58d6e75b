"""Property-based tests of event validation (``parse_event``, ``validate_event``), and real dirty data.

Valid events over real geography are mutated: Avro-valid changes of one to three fields (through
the codec), or arbitrary JSON in place of any part (the ingest path). Each gives an ``Event`` or a
``RejectedInput`` whose message names what is wrong and never contains the pupil's INE or names,
even when a mutation moved them into another field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import event as note
from hypothesis import given, settings
from pydantic import BaseModel, ValidationError
from scolaflux.schemas.codec import event_codec
from scolaflux.schemas.errors import DecodeError, InvalidEvent, RejectedInput
from scolaflux.schemas.models import Event
from scolaflux.schemas.validation import describe, encode_event, parse_event, trusted_event, validate_event

from tests.conftest import make_event
from tests.fuzz.strategies import events, mutated_dicts, mutated_records


def assert_no_pupil_data(message: str, event: Event) -> None:
    pupil = event.pupil
    for secret in (pupil.ine, pupil.last_name, pupil.first_name):
        assert secret and secret.lower() not in message.lower(), f"pupil data in {message!r}"


def accept_or_reject(event: Event, parse: Any, data: Any) -> Event | None:
    """The accepted event, or None for a rejection with a clean reason; anything else fails."""
    try:
        return parse(data)
    except RejectedInput as error:
        message = str(error)
        assert error.reason in {"decode", "invalid"} and message
        assert_no_pupil_data(message, event)
        return None


def _decoded(event: Event) -> dict[str, Any]:
    return event_codec().decode(encode_event(event))


def _planted(event: Event) -> list[str]:
    """The pupil's own identifiers, for a mutation to move into another field."""
    return [event.pupil.ine, event.pupil.last_name or "", event.pupil.first_name or ""]


@given(events())
def test_generated_events_are_valid_and_round_trip(event: Event) -> None:
    assert parse_event(encode_event(event)) == event


@settings(max_examples=400)
@given(mutated_records())
def test_avro_valid_mutations_give_an_event_or_a_clean_rejection(case: tuple[Event, dict[str, Any]]) -> None:
    original, record = case
    accepted = accept_or_reject(original, parse_event, event_codec().encode(record))
    if accepted is not None:  # what was accepted is stable: it encodes and reads back the same
        assert parse_event(encode_event(accepted)) == accepted


@settings(max_examples=400)
@given(events().flatmap(lambda e: mutated_dicts(_decoded(e), _planted(e)).map(lambda d: (e, d))))
def test_arbitrary_json_in_a_record_gives_an_event_or_a_clean_rejection(case: tuple[Event, dict[str, Any]]) -> None:
    original, record = case
    accept_or_reject(original, validate_event, record)


# --- the hot path's check against pydantic ---------------------------------------------------


def same_model(ours: BaseModel, theirs: BaseModel) -> None:
    """Equal, field by field of the same types, with the same fields set, nested models too."""
    assert ours == theirs and repr(ours) == repr(theirs) and ours.model_fields_set == theirs.model_fields_set
    for name in type(theirs).model_fields:
        mine, expected = getattr(ours, name), getattr(theirs, name)
        assert type(mine) is type(expected), name
        if isinstance(expected, BaseModel):
            same_model(mine, expected)


def assert_as_pydantic(record: dict[str, Any]) -> str:
    """``validate_event`` accepts exactly what pydantic accepts, giving the same event, and rejects
    the rest with pydantic's reason; whatever ``trusted_event`` accepts, pydantic accepts the same.
    Returns which way the record went."""
    try:
        expected: Event | str = Event.from_avro(record)
    except ValidationError as error:
        expected = describe(error)
    try:
        ours: Event | str = validate_event(record)
    except InvalidEvent as error:
        ours = str(error)
    trusted = trusted_event(record)
    if isinstance(expected, str):
        assert trusted is None and ours == expected
        return "pydantic rejects"
    assert isinstance(ours, Event)
    same_model(ours, expected)
    if trusted is not None:
        same_model(trusted, expected)
    return f"pydantic accepts, {'on' if trusted else 'off'} the hot path"


@given(events())
def test_the_hot_path_takes_every_valid_event_as_pydantic_gives_it(event: Event) -> None:
    record = _decoded(event)
    trusted = trusted_event(record)
    assert trusted is not None, "a valid event of the usual shape left the hot path"
    same_model(trusted, Event.from_avro(record))


@settings(max_examples=400)
@given(mutated_records())
def test_the_hot_path_accepts_and_rejects_avro_records_as_pydantic_does(case: tuple[Event, dict[str, Any]]) -> None:
    _, record = case
    try:
        decoded = event_codec().decode(event_codec().encode(record))
    except DecodeError:  # e.g. a string that is not a UUID under the uuid logical type
        note("does not decode")
        return
    note(assert_as_pydantic(decoded))


@settings(max_examples=400)
@given(events().flatmap(lambda e: mutated_dicts(_decoded(e), _planted(e))))
def test_the_hot_path_accepts_and_rejects_arbitrary_json_as_pydantic_does(record: dict[str, Any]) -> None:
    note(assert_as_pydantic(record))


EDGES = {  # each rule's boundary, on both sides, and values of a near type
    "school_year": [1989, 1990, 2100, 2101, True, 2026.0, "2026"],
    "pupil__birth_date": [dt.date(1989, 12, 31), dt.date(1990, 1, 1), dt.date(2026, 9, 1), dt.date(2026, 9, 2)],
    "event_time": [dt.datetime(2101, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 9, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)],
    "recorded_at": [dt.datetime(1989, 12, 31, 23, tzinfo=dt.UTC), dt.datetime(2026, 9, 1, 8)],
    "payload__entry_date": [dt.date(2100, 12, 31), dt.date(2101, 1, 1), "2026-09-01"],
    "payload__level": ["6e", "6E", " 6e", None],
    "pupil__ine": ["1234567890A", "1234567890a", " 1234567890A ", "1234A12345B", "123456789AB", "123456789"],
    "pupil__residence_commune": ["2A004", "2a004", " 69123", "6912"],
    "school": ["0690026D", "0690026d", "0690026E", "0690026"],
    "source__academy": ["10", "1", "٠١", "10\n"],
    "pupil__sex": ["F", "f", None],
    "event_id": ["c96033fa-0700-4de0-a350-b5c75332833e"],
}


@pytest.mark.parametrize(("path", "value"), [(p, v) for p, values in EDGES.items() for v in values])
def test_the_hot_path_decides_edge_values_as_pydantic_does(path: str, value: Any) -> None:
    assert_as_pydantic(_record(**{path: value}))


# --- real dirty data --------------------------------------------------------------------------


def _record(**changes: Any) -> dict[str, Any]:
    """A decoded record (as from the codec or an ingest body) with some fields changed."""
    record = event_codec().decode(encode_event(make_event("enrolment")))
    for path, value in changes.items():
        target = record
        *parents, leaf = path.split("__")
        for step in parents:
            target = target[step]
        target[leaf] = value
    return record


IMPOSSIBLE_DATES = {
    "born after the event": ({"pupil__birth_date": dt.date(2027, 3, 1)}, "event_time is before pupil.birth_date"),
    "entered school before birth": (
        {"pupil__birth_date": dt.date(2026, 8, 1), "payload__entry_date": dt.date(2026, 7, 1)},
        "payload.entry_date is before pupil.birth_date",
    ),
    "30 February": ({"payload__entry_date": "2026-02-30"}, "entry_date: Input should be a valid date"),
    "born in 1890": ({"pupil__birth_date": dt.date(1890, 1, 1)}, "pupil.birth_date"),
    "enrolled in 2150": ({"payload__entry_date": dt.date(2150, 9, 1)}, "entry_date: Value error, date must be"),
    "month 13": ({"pupil__birth_date": "2011-13-01"}, "pupil.birth_date"),
    "naive timestamp": ({"event_time": dt.datetime(2026, 9, 1, 8)}, "time zone"),
    "school year 20266": ({"school_year": 20266}, "school_year"),
}


@pytest.mark.parametrize(("changes", "rule"), IMPOSSIBLE_DATES.values(), ids=IMPOSSIBLE_DATES.keys())
def test_impossible_dates_are_refused_naming_the_field(changes: dict[str, Any], rule: str) -> None:
    with pytest.raises(InvalidEvent, match=rule.replace(".", r"\.")):
        validate_event(_record(**changes))
    assert_as_pydantic(_record(**changes))


def test_an_absence_before_birth_is_refused() -> None:
    record = event_codec().decode(encode_event(make_event("absence")))
    record["pupil"]["birth_date"] = dt.date(2026, 10, 6)
    record["event_time"] = dt.datetime(2026, 10, 7, tzinfo=dt.UTC)
    with pytest.raises(InvalidEvent, match=r"payload\.date is before pupil\.birth_date"):
        validate_event(record)


UNKNOWN_COMMUNES = {
    "20004": "Ajaccio under its code before Corsica was split in 1976 (now 2A004)",
    "98735": "Papeete: French Polynesia runs its own schools, outside the COG communes",
    "99999": "a placeholder",
    "75000": "a postcode mistaken for an INSEE code",
}


@pytest.mark.parametrize("code", UNKNOWN_COMMUNES, ids=UNKNOWN_COMMUNES.values())
def test_unknown_communes_pass_the_format_but_are_not_in_the_reference_geography(code: str) -> None:
    """The format rule cannot know them; the processor refuses them against the reference
    geography (``pupil.residence_commune: not a commune of the reference geography``)."""
    from scolaflux.schemas.geography import load_geography

    assert validate_event(_record(pupil__residence_commune=code)).pupil.residence_commune == code
    assert code not in load_geography().communes
