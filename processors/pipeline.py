"""The processor's pure core: one raw record in, the records to write out (no Kafka here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..infra.kafka import deadletter_headers
from ..schemas.codec import delivery_codec
from ..schemas.errors import InvalidEvent, RejectedInput
from ..schemas.models import Event
from ..schemas.validation import parse_event
from .delivery import FIELDS_BY_TYPE, IDENTITY_FIELDS, delivery_id, event_fields, millis, minimise
from .identity import pseudonym
from .routing import Route, Router

Place = tuple[str, str, str]
"""(commune, département, région) INSEE codes of a school."""


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write: topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Pipeline:
    """Validate, route, minimise, treat identity, encode; bad input becomes a dead-letter record."""

    router: Router
    school_place: Callable[[str], Place | None]
    known_commune: Callable[[str], bool]
    deadletter_topic: str
    delivery_topic: Callable[[str], str]
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def process(self, raw: bytes, key: bytes | None, origin: str) -> list[Output]:
        """The outputs of one raw record. ``origin`` (topic/partition/offset) goes into dead-letter headers."""
        try:
            event = self._accept(raw)
        except RejectedInput as error:
            return [Output(self.deadletter_topic, key, raw, deadletter_headers(error, origin))]
        place = self.school_place(event.school)
        commune, departement, region = place or (None, None, None)
        now = millis(self.clock())
        fields = event_fields(event, commune)
        return [
            self._deliver(event, route, fields, now)
            for route in self.router.routes(event, commune, departement, region)
            if route.treatment != "aggregated"
        ]

    def _accept(self, raw: bytes) -> Event:
        event = parse_event(raw)
        if not self.known_commune(event.pupil.residence_commune):
            raise InvalidEvent("pupil.residence_commune: not a commune of the reference geography")
        return event

    def _deliver(self, event: Event, route: Route, fields: dict[str, Any], now: dt.datetime) -> Output:
        record = build_delivery(event, route, fields, now)
        subject = record["subject"] or record["event_ref"]
        return Output(self.delivery_topic(route.convention_id), subject.encode(), delivery_codec().encode(record))


def build_delivery(event: Event, route: Route, fields: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The delivery record of one event under one route: allowed fields only, identity treated."""
    allowed = route.fields & FIELDS_BY_TYPE[event.event_type]
    nominative = route.treatment == "nominative"
    if not nominative:
        allowed -= IDENTITY_FIELDS
    data = minimise(fields, allowed)

    def ref(value: str) -> str:
        return value if nominative else pseudonym(route.key, value)

    if "target_ref" in data:
        data["target_ref"] = ref(data["target_ref"])
    return {
        **data,
        "delivery_id": delivery_id(event.event_id, route.convention_id),
        "event_ref": ref(str(event.event_id)),
        "event_type": event.event_type.value,
        "event_time": event.event_time,
        "recorded_at": event.recorded_at,
        "delivered_at": now,
        "convention_id": route.convention_id,
        "convention_version": route.version,
        "authority_level": route.authority_level,
        "authority_code": route.authority_code,
        "identity_treatment": route.treatment,
        "subject": ref(event.pupil.ine),
        "fields": sorted(data),
    }
