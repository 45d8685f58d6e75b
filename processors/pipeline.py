"""The processor's pure core: one raw record in, the records to write out (no Kafka here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..infra.kafka import deadletter_headers
from ..schemas.codec import audit_codec, delivery_codec
from ..schemas.errors import InvalidEvent, RejectedInput
from ..schemas.models import Event
from ..schemas.validation import parse_event
from .aggregation import movement
from .delivery import FIELDS_BY_TYPE, IDENTITY_FIELDS, delivery_id, event_fields, millis, minimise
from .identity import pseudonym
from .routing import Location, Route, Router

Mode = Literal["live", "backfill"]


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write: topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Topics:
    """Where the pipeline writes: dead letters, audit, aggregation movements, each convention's deliveries."""

    deadletter: str
    audit: str
    aggregation: str
    delivery: Callable[[str], str]


@dataclass(frozen=True)
class Pipeline:
    """Validate, route, minimise, treat identity, encode, audit; bad input becomes a dead-letter record.

    Every delivery has its audit record in the same output list, so the two are acknowledged
    together. Events under an aggregated convention become movements for the aggregation stage.
    """

    router: Router
    locate: Callable[[Event], Location]
    known_commune: Callable[[str], bool]
    topics: Topics
    audit_key: bytes
    mode: Mode = "live"
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    def process(self, raw: bytes, key: bytes | None, origin: str) -> list[Output]:
        """The outputs of one raw record. ``origin`` (topic/partition/offset) goes into dead-letter headers."""
        try:
            event = self.accept(raw)
        except RejectedInput as error:
            return [Output(self.topics.deadletter, key, raw, deadletter_headers(error, origin))]
        return self.route(event)

    def route(self, event: Event) -> list[Output]:
        """The deliveries, movements and audit records of one valid event."""
        where = self.locate(event)
        now = millis(self.clock())
        fields = event_fields(event, where.school_commune)
        outputs: list[Output] = []
        for route in self.router.routes(event, where):
            if route.treatment == "aggregated":
                outputs.extend(self._count(event, route, now))
            else:
                outputs.extend(self._deliver(event, route, fields, now))
        return outputs

    def accept(self, raw: bytes) -> Event:
        """A valid event from raw bytes, or ``RejectedInput`` saying why not."""
        event = parse_event(raw)
        if not self.known_commune(event.pupil.residence_commune):
            raise InvalidEvent("pupil.residence_commune: not a commune of the reference geography")
        return event

    def _deliver(self, event: Event, route: Route, fields: dict[str, Any], now: dt.datetime) -> list[Output]:
        record = build_delivery(event, route, fields, now)
        subject = record["subject"] or record["event_ref"]
        audit = build_audit(event, route, record["delivery_id"], record["fields"], now, self.mode, self.audit_key)
        return [
            Output(self.topics.delivery(route.convention_id), subject.encode(), delivery_codec().encode(record)),
            self._audit_output(audit),
        ]

    def _count(self, event: Event, route: Route, now: dt.datetime) -> list[Output]:
        target = getattr(event.payload, "target_event_id", None)
        move = movement(
            event,
            route,
            pseudonym(route.key, event.pupil.ine),
            pseudonym(route.key, str(event.event_id)),
            pseudonym(route.key, target) if target else None,
        )
        if move is None:
            return []
        ident = delivery_id(event.event_id, route.convention_id)
        audit = build_audit(event, route, ident, ["aggregate"], now, self.mode, self.audit_key)
        return [Output(self.topics.aggregation, move.partition_key, move.to_bytes()), self._audit_output(audit)]

    def _audit_output(self, audit: dict[str, Any]) -> Output:
        return Output(self.topics.audit, audit["pupil"].encode(), audit_codec().encode(audit))


def build_audit(
    event: Event, route: Route, ident: str, fields: list[str], now: dt.datetime, mode: Mode, key: bytes
) -> dict[str, Any]:
    """The audit record of one delivery: the pupil under the audit key, never their INE."""
    return {
        "delivery_id": ident,
        "event_id": str(event.event_id),
        "event_type": event.event_type.value,
        "event_time": event.event_time,
        "pupil": pseudonym(key, event.pupil.ine),
        "convention_id": route.convention_id,
        "convention_version": route.version,
        "authority_level": route.authority_level,
        "authority_code": route.authority_code,
        "identity_treatment": route.treatment,
        "fields": fields,
        "delivered_at": now,
        "mode": mode,
    }


def build_delivery(event: Event, route: Route, fields: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The delivery record of one event under one route: allowed fields only, identity treated."""
    if route.treatment == "aggregated":
        raise ValueError(f"convention {route.convention_id} is aggregated: it receives cells, not events")
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
