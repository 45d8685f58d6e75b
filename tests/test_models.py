"""Event validation: every rule broken is named, with the field, and no pupil identifier."""

import datetime as dt

import pytest
from pydantic import ValidationError
from scolaflux.schemas.codec import event_codec
from scolaflux.schemas.errors import InvalidEvent
from scolaflux.schemas.validation import describe, parse_event

from tests.conftest import make_event


def _invalid(**changes) -> str:
    record = make_event().to_avro()
    for path, value in changes.items():
        target = record
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p] if not isinstance(target[p], tuple) else target[p][1]
        target[leaf] = value
    with pytest.raises(InvalidEvent) as info:
        parse_event(event_codec().encode(record))
    return str(info.value)


def test_wrong_uai_key_names_the_field() -> None:
    assert "school" in _invalid(school="0690026E") and "check letter" in _invalid(school="0690026E")


def test_bad_ine_names_the_field_but_not_the_value() -> None:
    message = _invalid(pupil__ine="12345XYZ")
    assert "pupil.ine" in message and "12345XYZ" not in message


def test_bad_commune_is_refused() -> None:
    assert "pupil.residence_commune" in _invalid(pupil__residence_commune="99X99")


def test_impossible_dates_are_refused() -> None:
    assert "birth_date" in _invalid(pupil__birth_date=dt.date(1890, 1, 1))


def test_payload_is_checked_as_its_event_type() -> None:
    with pytest.raises(ValidationError) as info:
        make_event("transfer", payload={"level": "3e", "exit_date": "2026-10-01", "destination_kind": "school"})
    assert "destination_school is required" in describe(info.value)


def test_absence_reason_matches_justification() -> None:
    with pytest.raises(ValidationError):
        make_event(
            "absence", payload={"date": "2026-10-05", "half_days": 1, "justified": True, "reason": "unjustified"}
        )


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        make_event(event_time=dt.datetime(2026, 9, 1, 8, 0))
