"""Minimisation: from a valid event to the flat fields a delivery may carry (pure functions)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from functools import cache
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
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
        case Enrolment() | Transfer():
            return dict(vars(payload))  # its fields, named as in the delivery schema (no nested model)
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


@cache
def picks(allowed: frozenset[str], event_type: EventType, nominative: bool) -> tuple[str, ...]:
    """The data fields a delivery of an event type may carry under an allow-list, sorted.

    Identity fields only under a nominative convention. Computed once per distinct allow-list.
    """
    names = allowed & FIELDS_BY_TYPE[event_type]
    return tuple(sorted(names if nominative else names - IDENTITY_FIELDS))


def delivery_id(event_id: uuid.UUID | str, convention_id: str) -> str:
    """The same event under the same convention always gets the same delivery id.

    It is ``uuid.uuid5(DELIVERY_NAMESPACE, f"{event_id}/{convention_id}")`` (RFC 4122: SHA-1 of
    the namespace and the name, version and variant bits set), written out without building a
    ``uuid.UUID`` (a third of the cost; tests/test_routing.py checks it against ``uuid.uuid5``).
    """
    name = DELIVERY_NAMESPACE.bytes + f"{event_id}/{convention_id}".encode()
    digest = bytearray(hashlib.sha1(name, usedforsecurity=False).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50
    digest[8] = digest[8] & 0x3F | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def millis(moment: dt.datetime) -> dt.datetime:
    """A timestamp truncated to the millisecond that Avro keeps."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def epoch_millis(moment: dt.datetime) -> int:
    """An aware timestamp as the milliseconds since the epoch that Avro's timestamp-millis holds."""
    return (moment - EPOCH) // dt.timedelta(milliseconds=1)
