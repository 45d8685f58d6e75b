"""Bytes in, a valid ``Event`` out, or a ``RejectedInput`` that says why (never with pupil data).

The pydantic models are the contract. On the hot path, ``trusted_event`` first checks a decoded
record of the usual shape (exact types, canonical values) against the same rules, with the same
functions where the models have them, and builds the ``Event`` without running pydantic (a third
of the cost); anything it is not sure of, valid or not, goes to pydantic, which accepts it or says
why not. So it never accepts what pydantic rejects, gives the event pydantic would give, and a
rejection is always pydantic's (tests/test_fuzz_events.py checks both on generated records).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from functools import lru_cache
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from .codec import event_codec
from .errors import InvalidEvent
from .identifiers import normalise_commune, normalise_ine, normalise_uai
from .models import (
    EARLIEST_DATE,
    LATEST_DATE,
    LEVELS,
    PAYLOAD_TYPES,
    Absence,
    Boarding,
    Correction,
    Enrolment,
    Erasure,
    Event,
    EventType,
    Pupil,
    Source,
    Track,
    Transfer,
)


def describe(error: ValidationError) -> str:
    """A validation error as 'field: rule' lines, without the input values (they may be identifiers)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def validate_event(record: dict[str, Any]) -> Event:
    """Validate a decoded record; raise ``InvalidEvent`` naming each field and rule broken."""
    event = trusted_event(record)
    if event is not None:
        return event
    try:
        return Event.from_avro(record)
    except ValidationError as exc:
        raise InvalidEvent(describe(exc)) from None


class _Unsure(Exception):
    """The record is not of the usual shape, or breaks a rule: pydantic decides."""


def _choices(model: type[BaseModel], name: str) -> frozenset[Any]:
    return frozenset(get_args(model.model_fields[name].annotation))


_EVENT_TYPES = {t.value: t for t in EventType}
_SYSTEMS = _choices(Source, "system")
_SEXES = frozenset({"F", "M", None})
_LEVELS = frozenset(LEVELS)
_OPTIONAL_LEVELS = frozenset({*LEVELS, None})
_TRACKS = frozenset({*get_args(Track), None})
_BOARDING = frozenset({*get_args(Boarding), None})
_DESTINATIONS = _choices(Transfer, "destination_kind")
_REASONS = _choices(Absence, "reason")
_SCOPES = _choices(Erasure, "scope")
_ACADEMY = re.compile(r"[0-9]{2}")
_school = lru_cache(maxsize=1 << 16)(normalise_uai)  # pure: the few schools and communes come back
_commune = lru_cache(maxsize=1 << 16)(normalise_commune)
_FIELDS = {model: tuple(model.model_fields) for model in (Event, Source, Pupil, *PAYLOAD_TYPES.values())}


def trusted_event(record: dict[str, Any]) -> Event | None:
    """The ``Event`` of a decoded record of the usual shape that keeps every rule, else None.

    None means "ask pydantic": the record may be valid in a less usual shape, or invalid.
    """
    try:
        return _event(record)
    except (_Unsure, ValueError, TypeError):  # a rule the models raise as ValueError; an unhashable value
        return None


def _event(record: dict[str, Any]) -> Event:
    _keys(record, Event)
    event_type = _EVENT_TYPES.get(record["event_type"])
    if event_type is None or type(record["event_id"]) is not uuid.UUID:
        raise _Unsure
    pupil = _pupil(record["pupil"])
    payload = _PAYLOADS[event_type](_keys(record["payload"], PAYLOAD_TYPES[event_type]))
    school_year = record["school_year"]
    if type(school_year) is not int or not 1990 <= school_year <= 2100:
        raise _Unsure
    event_time = _timestamp(record["event_time"])
    born = pupil.birth_date
    if event_time.date() < born or any(vars(payload).get(n, born) < born for n in ("entry_date", "exit_date", "date")):
        raise _Unsure  # nothing happens at school before birth
    values = {
        "event_id": record["event_id"],
        "event_type": event_type,
        "event_time": event_time,
        "recorded_at": _timestamp(record["recorded_at"]),
        "source": _source(record["source"]),
        "pupil": pupil,
        "school": _text(record["school"], _school),
        "school_year": school_year,
        "payload": payload,
    }
    return _trusted(Event, values)


def _trusted(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """An instance of a model from values that keep its rules: what ``model_construct`` does when
    every field is given (the models have no defaults to fill, private attributes or post-init)."""
    instance = _new(model)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


_new, _set = object.__new__, object.__setattr__


def _keys(data: Any, model: type[BaseModel]) -> dict[str, Any]:
    """The record of a model, if it has exactly the model's fields (as the Avro reader gives them)."""
    if type(data) is not dict or tuple(data) != _FIELDS[model]:
        raise _Unsure
    return data


def _source(data: Any) -> Source:
    _keys(data, Source)
    if data["system"] not in _SYSTEMS or type(data["academy"]) is not str or not _ACADEMY.fullmatch(data["academy"]):
        raise _Unsure
    return _trusted(Source, {"system": data["system"], "academy": data["academy"]})


def _pupil(data: Any) -> Pupil:
    _keys(data, Pupil)
    if data["sex"] not in _SEXES:
        raise _Unsure
    return _trusted(
        Pupil,
        {
            "ine": _text(data["ine"], normalise_ine),
            "birth_date": _date(data["birth_date"]),
            "residence_commune": _text(data["residence_commune"], _commune),
            "last_name": _optional_text(data["last_name"]),
            "first_name": _optional_text(data["first_name"]),
            "sex": data["sex"],
        },
    )


def _enrolment(data: dict[str, Any]) -> Enrolment:
    if data["level"] not in _LEVELS or data["track"] not in _TRACKS or data["boarding"] not in _BOARDING:
        raise _Unsure
    return _trusted(
        Enrolment,
        {
            "level": data["level"],
            "track": data["track"],
            "entry_date": _date(data["entry_date"]),
            "origin_school": _optional(data["origin_school"], normalise_uai),
            "boarding": data["boarding"],
        },
    )


def _transfer(data: dict[str, Any]) -> Transfer:
    if data["level"] not in _LEVELS or data["destination_kind"] not in _DESTINATIONS:
        raise _Unsure
    values = {
        "level": data["level"],
        "exit_date": _date(data["exit_date"]),
        "destination_kind": data["destination_kind"],
        "destination_school": _optional(data["destination_school"], normalise_uai),
        "destination_commune": _optional(data["destination_commune"], normalise_commune),
    }
    return _trusted(Transfer, values)._destination_matches_kind()


def _absence(data: dict[str, Any]) -> Absence:
    half_days, justified = data["half_days"], data["justified"]
    if type(half_days) is not int or not 1 <= half_days <= 2 or type(justified) is not bool:
        raise _Unsure
    if data["reason"] not in _REASONS:
        raise _Unsure
    values = {"date": _date(data["date"]), "half_days": half_days, "justified": justified, "reason": data["reason"]}
    return _trusted(Absence, values)._reason_matches_justification()


def _correction(data: dict[str, Any]) -> Correction:
    changed = data["changed_fields"]
    if data["level"] not in _OPTIONAL_LEVELS or data["track"] not in _TRACKS or type(changed) is not list:
        raise _Unsure
    if any(type(name) is not str for name in changed):
        raise _Unsure
    values = {
        "target_event_id": _optional_text(data["target_event_id"]),
        "level": data["level"],
        "track": data["track"],
        "changed_fields": list(changed),
    }
    return _trusted(Correction, values)


def _erasure(data: dict[str, Any]) -> Erasure:
    if data["scope"] not in _SCOPES or type(data["reason"]) is not str:
        raise _Unsure
    values = {
        "target_event_id": _optional_text(data["target_event_id"]),
        "scope": data["scope"],
        "reason": data["reason"],
    }
    return _trusted(Erasure, values)._event_scope_names_target()


_PAYLOADS = {
    EventType.ENROLMENT: _enrolment,
    EventType.TRANSFER: _transfer,
    EventType.ABSENCE: _absence,
    EventType.CORRECTION: _correction,
    EventType.ERASURE: _erasure,
}


def _text(value: Any, normalise: Any) -> str:
    if type(value) is not str:
        raise _Unsure
    return normalise(value)


def _optional(value: Any, normalise: Any) -> str | None:
    return None if value is None else _text(value, normalise)


def _optional_text(value: Any) -> str | None:
    if value is not None and type(value) is not str:
        raise _Unsure
    return value


def _date(value: Any) -> dt.date:
    if type(value) is not dt.date or not EARLIEST_DATE <= value <= LATEST_DATE:
        raise _Unsure
    return value


def _timestamp(value: Any) -> dt.datetime:
    if type(value) is not dt.datetime or value.tzinfo is None or not EARLIEST_DATE <= value.date() <= LATEST_DATE:
        raise _Unsure
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def parse_event(raw: bytes) -> Event:
    """Decode and validate one raw record (``DecodeError`` or ``InvalidEvent`` when it is bad)."""
    return validate_event(event_codec().decode(raw))


def encode_event(event: Event) -> bytes:
    """Encode a valid event for the raw topic."""
    return event_codec().encode(event.to_avro())
