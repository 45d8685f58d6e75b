"""Minimisation: from a valid event to the flat fields a delivery may carry (pure functions)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ..schemas.models import Absence, Correction, Enrolment, Erasure, Event, EventType, Transfer

IDENTITY_FIELDS = frozenset({"last_name", "first_name", "sex", "birth_date"})
"""Fields that identify a pupil directly: delivered only under a nominative convention."""

COMMON_FIELDS = frozenset(
    {
        "last_name",
        "first_name",
        "sex",
        "birth_date",
        "birth_year",
        "residence_commune",
        "school",
        "school_commune",
        "school_year",
    }
)
FIELDS_BY_TYPE: dict[EventType, frozenset[str]] = {
    EventType.ENROLMENT: COMMON_FIELDS | {"level", "track", "entry_date", "origin_school"},
    EventType.TRANSFER: COMMON_FIELDS
    | {"level", "exit_date", "destination_kind", "destination_school", "destination_commune"},
    EventType.ABSENCE: COMMON_FIELDS | {"absence_date", "half_days", "justified", "absence_reason"},
    EventType.CORRECTION: COMMON_FIELDS | {"level", "track", "target_ref", "changed_fields"},
    EventType.ERASURE: frozenset({"school", "school_year", "target_ref", "erasure_scope"}),
}
"""Every data field a delivery of each event type can carry: the vocabulary of allow-lists."""

DELIVERY_NAMESPACE = uuid.UUID("6f1c1c2e-3a55-4c1e-9d0b-7d4b7e7d9a10")


def event_fields(event: Event, school_commune: str | None) -> dict[str, Any]:
    """All the data fields of an event, named as in the delivery schema."""
    pupil = event.pupil
    fields: dict[str, Any] = {
        "last_name": pupil.last_name,
        "first_name": pupil.first_name,
        "sex": pupil.sex,
        "birth_date": pupil.birth_date,
        "birth_year": pupil.birth_date.year,
        "residence_commune": pupil.residence_commune,
        "school": event.school,
        "school_commune": school_commune,
        "school_year": event.school_year,
    }
    fields.update(_payload_fields(event.payload))
    return fields


def _payload_fields(payload: object) -> dict[str, Any]:
    match payload:
        case Enrolment():
            return payload.model_dump()
        case Transfer():
            return payload.model_dump()
        case Absence():
            return {
                "absence_date": payload.date,
                "half_days": payload.half_days,
                "justified": payload.justified,
                "absence_reason": payload.reason,
            }
        case Correction():
            return {
                "level": payload.level,
                "track": payload.track,
                "target_ref": payload.target_event_id,
                "changed_fields": payload.changed_fields,
            }
        case Erasure():
            return {"target_ref": payload.target_event_id, "erasure_scope": payload.scope}
    raise TypeError(f"unknown payload {type(payload).__name__}")


def minimise(fields: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Keep only the allowed fields that have a value."""
    return {name: value for name, value in fields.items() if name in allowed and value is not None}


def delivery_id(event_id: uuid.UUID, convention_id: str) -> str:
    """The same event under the same convention always gets the same delivery id."""
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{convention_id}"))


def millis(moment: dt.datetime) -> dt.datetime:
    """A timestamp truncated to the millisecond that Avro keeps."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
