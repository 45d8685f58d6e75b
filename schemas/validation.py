"""Bytes in, a valid ``Event`` out, or a ``RejectedInput`` that says why (never with pupil data)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .codec import event_codec
from .errors import InvalidEvent
from .models import Event


def describe(error: ValidationError) -> str:
    """A validation error as 'field: rule' lines, without the input values (they may be identifiers)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def validate_event(record: dict[str, Any]) -> Event:
    """Validate a decoded record; raise ``InvalidEvent`` naming each field and rule broken."""
    try:
        return Event.from_avro(record)
    except ValidationError as exc:
        raise InvalidEvent(describe(exc)) from None


def parse_event(raw: bytes) -> Event:
    """Decode and validate one raw record (``DecodeError`` or ``InvalidEvent`` when it is bad)."""
    return validate_event(event_codec().decode(raw))


def encode_event(event: Event) -> bytes:
    """Encode a valid event for the raw topic."""
    return event_codec().encode(event.to_avro())
