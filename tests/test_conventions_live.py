"""Conventions change while events flow, and one running processor follows (real broker, real worker).

A convention of the Loire (collèges, pseudonymised) is published as a draft, signed, amended,
suspended, signed again and ended, while enrolments keep coming; a late event (one whose time falls
before the last change) is judged by the version in force at its own time. Saint-Étienne's
convention, always signed, receives every event too: its deliveries tell when an event has been
processed, so the absence of a delivery is observed, not hoped for. The audit trail is checked on
the way: one record per delivery, found by pupil.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from scolaflux.infra.settings import Settings
from scolaflux.infra.topics import read_to_end
from scolaflux.processors.audit import pupil_audit
from scolaflux.processors.conventions import Convention, load_convention
from scolaflux.processors.delivery import delivery_id
from scolaflux.processors.publish import publish, read_histories
from scolaflux.producers.kafka import EventProducer
from scolaflux.schemas.codec import audit_codec, delivery_codec
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.models import Event

from tests.conftest import EXAMPLE_CONVENTIONS, make_event, wait_for

pytestmark = pytest.mark.broker

SAINT_ETIENNE = "42218"
MARKER = "commune-42218-instruction"
LOIRE = "departement-42-colleges"
T0 = dt.datetime(2026, 10, 1, 8, 0, tzinfo=dt.UTC)
FIELDS_A = ["birth_year", "level", "school"]
FIELDS_B = ["level", "residence_commune", "school"]


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def loire(version: int, status: str, fields: list[str], effective: dt.datetime | None) -> Convention:
    """A version of the Loire's collège convention, enrolments only."""
    base = load_convention(EXAMPLE_CONVENTIONS / f"{LOIRE}.yaml").model_dump()
    changes = {"version": version, "status": status, "events": {"enrolment": fields}, "effective_from": effective}
    return Convention.model_validate({**base, **changes, "signed": None if status == "draft" else base["signed"]})


def enrolment(hours: float, school: str) -> Event:
    when = at(hours)
    return make_event(
        "enrolment",
        ine=f"{uuid.uuid4().int % 10**9:09d}LO",
        commune=SAINT_ETIENNE,
        school=school,
        payload={"level": "6e", "entry_date": when.date()},
        event_time=when,
        recorded_at=when,
    )


def test_signing_amending_suspending_and_ending_take_effect_while_events_flow(
    settings: Settings, publish_conventions, processor
) -> None:
    college = next(s.uai for s in load_geography(["42"]).schools_in_commune(SAINT_ETIENNE) if s.kind == "college")
    publish_conventions(MARKER)
    versions = [
        loire(1, "draft", FIELDS_A, None),
        loire(2, "signed", FIELDS_A, at(2)),
        loire(3, "signed", FIELDS_B, at(4)),
        loire(4, "suspended", FIELDS_B, at(6)),
        loire(5, "signed", FIELDS_B, at(8)),
        loire(6, "ended", FIELDS_B, at(10)),
    ]
    # each step: publish one version, then send events whose time is given in hours after T0
    steps = [(1, [1.0]), (2, [3.0, 1.5]), (3, [5.0, 3.5]), (4, [7.0, 5.5]), (5, [9.0]), (6, [11.0, 9.5])]
    expected = {3.0: (2, FIELDS_A), 3.5: (2, FIELDS_A), 5.0: (3, FIELDS_B), 5.5: (3, FIELDS_B), 9.0: (5, FIELDS_B)}
    sent: dict[float, Event] = {}
    processor()
    for version, hours in steps:
        publish(settings, [(f"version {version}", versions[version - 1])])
        events = [enrolment(h, college) for h in hours]
        with EventProducer(settings) as producer:
            for event in events:
                producer.send(event)
        sent.update(zip(hours, events, strict=True))
        _await_processed(settings, events)
        delivered = _deliveries(settings, LOIRE)
        for h, event in sent.items():
            ident = delivery_id(event.event_id, LOIRE)
            if h not in expected:
                assert ident not in delivered, f"the event of T0+{h}h was delivered after step {version}"
            else:
                assert ident in delivered, f"the event of T0+{h}h was not delivered after step {version}"
                got = delivered[ident]
                assert (got["convention_version"], got["fields"]) == expected[h], f"event of T0+{h}h"
    assert {d["delivery_id"] for d in _deliveries(settings, LOIRE).values()} == {
        delivery_id(sent[h].event_id, LOIRE) for h in expected
    }
    assert len(read_histories(settings)[LOIRE].versions) == 6
    _check_audit(settings, sent, expected)
    _check_headcounts(settings)


def _check_headcounts(settings: Settings) -> None:
    """The région's aggregated convention, signed last, counts lycée enrolments: a cell is published
    from the threshold (5) on, without a pupil in it (once per batch of movements: 5 then 6, or 6
    alone when the six enrolments came in one batch)."""
    lycee = next(s.uai for s in load_geography(["42"]).schools_in_commune(SAINT_ETIENNE) if s.kind == "lycee")
    headcounts = "region-84-lyon-lycees-effectifs"
    publish(settings, [(headcounts, load_convention(EXAMPLE_CONVENTIONS / f"{headcounts}.yaml"))])
    pupils = [
        make_event(
            "enrolment",
            ine=f"{n:09d}HC",
            commune=SAINT_ETIENNE,
            school=lycee,
            payload={"level": "2nde", "track": "GT", "entry_date": at(12 + n).date()},
            event_time=at(12 + n),
            recorded_at=at(12 + n),
        )
        for n in range(6)
    ]
    with EventProducer(settings) as producer:
        for event in pupils:
            producer.send(event)

    def cells() -> list[dict[str, Any]]:
        records = list(read_to_end(settings, settings.delivery_topic(headcounts)))
        assert not any(e.pupil.ine.encode() in r.value for e in pupils for r in records)
        return [delivery_codec().decode(r.value) for r in records]

    def all_six() -> list[dict[str, Any]]:
        found = cells()
        return found if found and found[-1]["aggregate"]["count"] == 6 else []

    found = wait_for(all_six, timeout=60, what="the headcount cell of the six enrolments")
    counts = [d["aggregate"]["count"] for d in found]
    assert counts in ([5, 6], [6]), counts  # never under the threshold, never a count twice
    assert [d["aggregate"] for d in found] == [
        {"school": lycee, "level": "2nde", "count": n, "suppressed": False} for n in counts
    ]
    assert {(d["subject"], d["identity_treatment"], d["convention_version"]) for d in found} == {
        (None, "aggregated", 1)
    }


def _await_processed(settings: Settings, events: list[Event]) -> None:
    """Wait until the marker convention has received every event (so the others are processed too)."""
    wanted = {str(e.event_id) for e in events}

    def processed() -> bool:
        refs = {d["event_ref"] for d in _deliveries(settings, MARKER).values()}
        return wanted <= refs

    wait_for(processed, timeout=120, what="the marker convention's deliveries")


def _deliveries(settings: Settings, convention_id: str) -> dict[str, dict[str, Any]]:
    records = read_to_end(settings, settings.delivery_topic(convention_id))
    return {d["delivery_id"]: d for d in (delivery_codec().decode(r.value) for r in records)}


def _check_audit(settings: Settings, sent: dict[float, Event], expected: dict[float, Any]) -> None:
    raw = [r.value for r in read_to_end(settings, settings.audit_topic)]
    assert not any(event.pupil.ine.encode() in value for event in sent.values() for value in raw)
    audits = [audit_codec().decode(value) for value in raw]
    loire_audits = {a["delivery_id"]: a for a in audits if a["convention_id"] == LOIRE}
    assert set(loire_audits) == {delivery_id(sent[h].event_id, LOIRE) for h in expected}
    for h, (version, fields) in expected.items():
        audit = loire_audits[delivery_id(sent[h].event_id, LOIRE)]
        assert (audit["convention_version"], audit["fields"], audit["identity_treatment"]) == (
            version,
            fields,
            "pseudonymised",
        )
        assert audit["event_id"] == str(sent[h].event_id) and audit["mode"] == "live"
    # "who received what about this pupil": Saint-Étienne (nominative) and the Loire (pseudonymised)
    trail = pupil_audit(settings, sent[5.0].pupil.ine)
    assert [(a["convention_id"], a["identity_treatment"]) for a in sorted(trail, key=lambda a: a["convention_id"])] == [
        (MARKER, "nominative"),
        (LOIRE, "pseudonymised"),
    ]
    assert pupil_audit(settings, sent[7.0].pupil.ine)[0]["convention_id"] == MARKER  # suspended: only the commune
    assert len(pupil_audit(settings, sent[7.0].pupil.ine)) == 1
