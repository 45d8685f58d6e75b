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
from .delivery import delivery_id, epoch_millis, event_fields, millis, picks
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
        routes = self.router.routes(event, where)
        if not routes:
            return []
        facts = Facts.of(event, event_fields(event, where.school_commune), self.clock(), self.mode, self.audit_key)
        outputs: list[Output] = []
        for route in routes:
            if route.treatment == "aggregated":
                outputs.extend(self._count(facts, route))
            else:
                outputs.extend(self._deliver(facts, route))
        return outputs

    def accept(self, raw: bytes) -> Event:
        """A valid event from raw bytes, or ``RejectedInput`` saying why not."""
        event = parse_event(raw)
        if not self.known_commune(event.pupil.residence_commune):
            raise InvalidEvent("pupil.residence_commune: not a commune of the reference geography")
        return event

    def _deliver(self, facts: Facts, route: Route) -> list[Output]:
        record = build_delivery(facts, route)
        subject = record["subject"] or record["event_ref"]
        audit = build_audit(facts, route, record["delivery_id"], record["fields"])
        return [
            Output(self.topics.delivery(route.convention_id), subject.encode(), delivery_codec().encode(record)),
            self._audit_output(audit),
        ]

    def _count(self, facts: Facts, route: Route) -> list[Output]:
        event = facts.event
        target = vars(event.payload).get("target_event_id")
        move = movement(
            event,
            route,
            pseudonym(route.key, event.pupil.ine),
            pseudonym(route.key, facts.event_id),
            pseudonym(route.key, target) if target else None,
        )
        if move is None:
            return []
        audit = build_audit(facts, route, delivery_id(facts.event_id, route.convention_id), ["aggregate"])
        return [Output(self.topics.aggregation, move.partition_key, move.to_bytes()), self._audit_output(audit)]

    def _audit_output(self, audit: dict[str, Any]) -> Output:
        return Output(self.topics.audit, audit["pupil"].encode(), audit_codec().encode(audit))


@dataclass(frozen=True, slots=True)
class Facts:
    """What every output of one event shares, worked out once per event (timestamps as Avro's millis)."""

    event: Event
    event_id: str
    event_type: str
    event_time: int
    recorded_at: int
    delivered_at: int
    fields: dict[str, Any]
    mode: Mode
    audit_pupil: str

    @classmethod
    def of(cls, event: Event, fields: dict[str, Any], now: dt.datetime, mode: Mode, audit_key: bytes) -> Facts:
        """The facts of an event with its data ``fields``, delivered at ``now`` (to the millisecond)."""
        return cls(
            event=event,
            event_id=str(event.event_id),
            event_type=event.event_type.value,
            event_time=epoch_millis(event.event_time),
            recorded_at=epoch_millis(event.recorded_at),
            delivered_at=epoch_millis(millis(now)),
            fields=fields,
            mode=mode,
            audit_pupil=pseudonym(audit_key, event.pupil.ine),
        )


def build_audit(facts: Facts, route: Route, ident: str, fields: list[str]) -> dict[str, Any]:
    """The audit record of one delivery: the pupil under the audit key, never their INE."""
    return {
        "delivery_id": ident,
        "event_id": facts.event_id,
        "event_type": facts.event_type,
        "event_time": facts.event_time,
        "pupil": facts.audit_pupil,
        "convention_id": route.convention_id,
        "convention_version": route.version,
        "authority_level": route.authority_level,
        "authority_code": route.authority_code,
        "identity_treatment": route.treatment,
        "fields": fields,
        "delivered_at": facts.delivered_at,
        "mode": facts.mode,
    }


def build_delivery(facts: Facts, route: Route) -> dict[str, Any]:
    """The delivery record of one event under one route: allowed fields only, identity treated."""
    if route.treatment == "aggregated":
        raise ValueError(f"convention {route.convention_id} is aggregated: it receives cells, not events")
    nominative = route.treatment == "nominative"
    fields = facts.fields
    allowed = picks(route.fields, facts.event.event_type, nominative)
    record = {name: fields[name] for name in allowed if fields[name] is not None}  # minimised
    delivered = list(record)  # sorted, as picks are

    def ref(value: str) -> str:
        return value if nominative else pseudonym(route.key, value)

    if "target_ref" in record:
        record["target_ref"] = ref(record["target_ref"])
    record.update(
        delivery_id=delivery_id(facts.event_id, route.convention_id),
        event_ref=ref(facts.event_id),
        event_type=facts.event_type,
        event_time=facts.event_time,
        recorded_at=facts.recorded_at,
        delivered_at=facts.delivered_at,
        convention_id=route.convention_id,
        convention_version=route.version,
        authority_level=route.authority_level,
        authority_code=route.authority_code,
        identity_treatment=route.treatment,
        subject=ref(facts.event.pupil.ine),
        fields=delivered,
    )
    return record
