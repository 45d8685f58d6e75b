"""Backfill: a convention signed after its events were processed gets them all, once (real broker).

Events flow through a running processor before the Loire's collège convention exists, then after
it is published; the backfill then replays the retained raw topic through that convention alone.
Its delivery topic ends up holding exactly what a convention live from the start would have
received (compared record by record, delivery times aside), with no delivery twice, even though
the backfill was interrupted and resumed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

import pytest
from scolaflux.infra.settings import Settings
from scolaflux.infra.topics import read_to_end
from scolaflux.processors.backfill import BackfillError, backfill
from scolaflux.processors.conventions import load_convention
from scolaflux.processors.history import ConventionHistory
from scolaflux.processors.publish import publish
from scolaflux.processors.routing import ConventionIndex
from scolaflux.processors.wiring import build_pipeline, master_key
from scolaflux.producers.kafka import EventProducer
from scolaflux.schemas.codec import audit_codec, delivery_codec
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.models import Event

from tests.conftest import EXAMPLE_CONVENTIONS, make_event, wait_for

pytestmark = pytest.mark.broker

SAINT_ETIENNE = "42218"
MARKER = "commune-42218-instruction"
LOIRE = "departement-42-colleges"


def events(count: int, first_hour: int, schools: list[str]) -> list[Event]:
    """Enrolments and transfers of Saint-Étienne's pupils in its collèges and écoles."""
    made = []
    for n in range(count):
        when = dt.datetime(2026, 10, 1, 8, tzinfo=dt.UTC) + dt.timedelta(hours=first_hour + n)
        school = schools[n % len(schools)]
        level = "CM2" if school == schools[-1] else "5e"  # the last school is an école: the Loire gets nothing
        kind = "transfer" if n % 4 == 3 else "enrolment"
        payload = (
            {"level": level, "exit_date": when.date(), "destination_kind": "unknown"}
            if kind == "transfer"
            else {"level": level, "entry_date": when.date()}
        )
        ine = f"{uuid.uuid4().int % 10**9:09d}BF"
        made.append(
            make_event(
                kind, ine=ine, commune=SAINT_ETIENNE, school=school, payload=payload, event_time=when, recorded_at=when
            )
        )
    return made


def comparable(delivery: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in delivery.items() if k != "delivered_at"}


def test_a_backfill_gives_what_a_convention_live_from_the_start_would_have_received(
    settings: Settings, publish_conventions, processor
) -> None:
    geography = load_geography()
    schools = [s.uai for s in geography.schools_in_commune(SAINT_ETIENNE) if s.kind == "college"][:3]
    schools.append(next(s.uai for s in geography.schools_in_commune(SAINT_ETIENNE) if s.kind == "ecole"))
    publish_conventions(MARKER)
    before, after = events(40, 0, schools), events(24, 100, schools)
    processor()
    _produce_and_await(settings, before)
    loire = load_convention(EXAMPLE_CONVENTIONS / f"{LOIRE}.yaml")
    publish(settings, [(LOIRE, loire)])
    _produce_and_await(settings, after)
    live = _deliveries(settings)
    assert 0 < len(live) < len(before + after)  # the live flow delivered the later events only

    first = backfill(settings, LOIRE, geography, wait_for_live=120, limit=20)
    assert not first.complete and first.read >= 20
    second = backfill(settings, LOIRE, geography, wait_for_live=120)
    assert second.complete
    assert first.read + second.read == len(before + after)  # resumed where the first run stopped

    index = ConventionIndex.build([ConventionHistory.first(loire)], master_key(settings))
    pipeline = build_pipeline(settings, geography, index)
    from_the_start = {
        d["delivery_id"]: comparable(d)
        for e in before + after
        for o in pipeline.route(e)
        if o.topic == settings.delivery_topic(LOIRE)
        for d in [delivery_codec().decode(o.value)]
    }
    records = [delivery_codec().decode(r.value) for r in read_to_end(settings, settings.delivery_topic(LOIRE))]
    assert Counter(d["delivery_id"] for d in records).most_common(1)[0][1] == 1  # nothing delivered twice
    assert {d["delivery_id"]: comparable(d) for d in records} == from_the_start
    assert second.skipped + first.skipped == len(live)  # what the live flow delivered was left alone

    modes = Counter(a["mode"] for a in _audits(settings) if a["convention_id"] == LOIRE)
    assert modes == {"live": len(live), "backfill": len(from_the_start) - len(live)}

    again = backfill(settings, LOIRE, geography, wait_for_live=120)
    assert again.complete and again.read == 0  # a finished backfill has nothing left to do


def test_a_backfill_refuses_an_unknown_convention(settings: Settings, topics) -> None:
    topics()
    with pytest.raises(BackfillError, match="is not published"):
        backfill(settings, "nowhere-convention", load_geography(["42"]), wait_for_live=None)


def _produce_and_await(settings: Settings, batch: list[Event]) -> None:
    with EventProducer(settings) as producer:
        for event in batch:
            producer.send(event)
    wanted = {str(e.event_id) for e in batch}

    def processed() -> bool:
        records = read_to_end(settings, settings.delivery_topic(MARKER))
        return wanted <= {delivery_codec().decode(r.value)["event_ref"] for r in records}

    wait_for(processed, timeout=120, what="the marker convention's deliveries")


def _deliveries(settings: Settings) -> list[dict[str, Any]]:
    return [delivery_codec().decode(r.value) for r in read_to_end(settings, settings.delivery_topic(LOIRE))]


def _audits(settings: Settings) -> list[dict[str, Any]]:
    return [audit_codec().decode(r.value) for r in read_to_end(settings, settings.audit_topic)]
