"""The simulators, without a broker: deterministic, valid, consistent pupil histories, DOMAIN rates."""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter, defaultdict
from functools import cache
from typing import Any

import pytest
from scolaflux.producers.cli import read_frames, write_frames
from scolaflux.producers.simulator import (
    RENTREE_WAVE,
    Simulator,
    age_of_level,
    is_school_day,
    kind_of_level,
    territory_communes,
)
from scolaflux.schemas.geography import Geography, load_geography
from scolaflux.schemas.models import Event
from scolaflux.schemas.validation import parse_event

LYON_AREA = ["69123", "69266", "69259", "69029"]  # Lyon, Villeurbanne, Vénissieux, Bron


@pytest.fixture(scope="module")
def geography() -> Geography:
    return load_geography(["69"])


@cache
def year_and_a_bit() -> list[dict[str, Any]]:
    """400 simulated days (into a second school year) over four communes, 150 pupils each."""
    simulator = Simulator(load_geography(["69"]), LYON_AREA, seed=11, pupils_per_commune=150, days=400)
    return list(simulator.records())


def test_the_same_seed_gives_the_same_events_and_another_seed_others(geography: Geography) -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        return list(Simulator(geography, LYON_AREA[:2], seed=seed, pupils_per_commune=50, days=40).records())

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert [r["event_id"] for r in first] != [r["event_id"] for r in other]


def test_every_simulated_event_is_valid_and_encodes() -> None:
    records = year_and_a_bit()
    assert len(records) > 5_000
    for record in records:
        Event.from_avro(record)  # raises on any broken rule
    buffer = io.BytesIO()
    assert write_frames(buffer, records[:500], validate=False) == 500
    buffer.seek(0)
    frames = list(read_frames(buffer))
    assert [parse_event(value).event_id for _, value in frames] == [Event.from_avro(r).event_id for r in records[:500]]
    assert frames[0][0] == records[0]["pupil"]["ine"].encode()


def test_events_come_in_time_order_and_only_on_school_days() -> None:
    times = [r["event_time"] for r in year_and_a_bit()]
    assert times == sorted(times)
    assert all(is_school_day(t.date()) for t in times)


def test_most_enrolments_are_declared_in_the_first_days_of_september() -> None:
    first_year = [r for r in year_and_a_bit() if r["event_type"] == "enrolment" and r["school_year"] == 2026]
    days = Counter(r["event_time"].date() for r in first_year)
    first_two = sorted(days)[:2]
    share = sum(days[d] for d in first_two) / len(first_year)
    assert share > sum(RENTREE_WAVE[:2]) - 0.1
    assert all(d.month == 9 for d in first_two)


def test_a_pupil_history_is_consistent_enrolled_before_anything_else_at_that_school() -> None:
    school_of: dict[str, str | None] = {}
    for record in year_and_a_bit():
        ine, event_type = record["pupil"]["ine"], record["event_type"]
        if event_type == "enrolment":
            if record["school_year"] == 2026:  # a re-enrolment at the next rentrée may follow a departure
                assert school_of.get(ine) is None, "enrolled twice without leaving"
            school_of[ine] = record["school"]
            continue
        assert school_of.get(ine) == record["school"], f"a {event_type} at a school the pupil is not enrolled in"
        if event_type == "transfer":
            school_of[ine] = None
        if event_type == "erasure" and record["payload"]["scope"] == "pupil":
            school_of[ine] = "erased"


def test_ages_match_levels_and_schools_match_levels(geography: Geography) -> None:
    for record in year_and_a_bit():
        if record["event_type"] != "enrolment":
            continue
        level = record["payload"]["level"]
        age = record["school_year"] - record["pupil"]["birth_date"].year
        assert age - age_of_level(level) in (0, 1), "age does not match the level (one repeated year allowed)"
        assert geography.schools[record["school"]].kind == kind_of_level(level)


def test_the_next_school_year_moves_pupils_up_and_enrols_them_again() -> None:
    records = year_and_a_bit()
    levels: dict[int, dict[str, str]] = defaultdict(dict)
    for record in records:
        if record["event_type"] == "enrolment":
            levels[record["school_year"]][record["pupil"]["ine"]] = record["payload"]["level"]
    both = levels[2026].keys() & levels[2027].keys()
    assert len(both) > 400
    moved_up = sum(age_of_level(levels[2027][i]) == age_of_level(levels[2026][i]) + 1 for i in both)
    assert moved_up / len(both) > 0.9
    new_cohort = [i for i, level in levels[2027].items() if i not in levels[2026] and level == "PS"]
    assert new_cohort


def test_mutations_include_unknown_destinations_some_never_enrolled_again() -> None:
    records = [r for r in year_and_a_bit() if r["school_year"] == 2026]
    departures = [r for r in records if r["event_type"] == "transfer"]
    kinds = Counter(r["payload"]["destination_kind"] for r in departures)
    assert {"school", "commune", "unknown"} <= kinds.keys()
    enrolled_at: dict[str, list[dt.datetime]] = defaultdict(list)
    for r in records:
        if r["event_type"] == "enrolment":
            enrolled_at[r["pupil"]["ine"]].append(r["event_time"])
    unknown = [r for r in departures if r["payload"]["destination_kind"] == "unknown"]
    lost = [r for r in unknown if not any(t > r["event_time"] for t in enrolled_at[r["pupil"]["ine"]])]
    assert 0 < len(lost) < len(unknown)
    to_school = [r for r in departures if r["payload"]["destination_kind"] == "school"]
    followed = {
        r["pupil"]["ine"]
        for r in records
        if r["event_type"] == "enrolment" and r["payload"]["origin_school"] and r["event_time"].month != 9
    }
    assert sum(r["pupil"]["ine"] in followed for r in to_school) > len(to_school) / 2


def test_absence_rates_are_those_of_the_domain() -> None:
    """About 7 % of pupils absent on a school day, about a quarter of them without valid reason."""
    records = [r for r in year_and_a_bit() if r["school_year"] == 2026]
    absences = [r for r in records if r["event_type"] == "absence"]
    days = len({r["event_time"].date() for r in absences})
    pupils = 4 * 150
    assert 0.05 < len(absences) / (days * pupils) < 0.09
    unjustified = sum(not r["payload"]["justified"] for r in absences) / len(absences)
    assert 0.18 < unjustified < 0.35
    per_month: Counter[tuple[str, int]] = Counter()
    for r in absences:
        if not r["payload"]["justified"]:
            per_month[r["pupil"]["ine"], r["event_time"].month] += r["payload"]["half_days"]
    assert any(half_days >= 4 for half_days in per_month.values()), "no absenteeism warning would ever fire"


def test_corrections_and_erasures_name_earlier_events() -> None:
    records = year_and_a_bit()
    seen: set[str] = set()
    kinds: Counter[str] = Counter()
    for record in records:
        if record["event_type"] in ("correction", "erasure"):
            target = record["payload"]["target_event_id"]
            assert target is None or target in seen
            kinds[record["event_type"]] += 1
        seen.add(record["event_id"])
    assert kinds["correction"] > 0 and kinds["erasure"] > 0


def test_the_demo_interface_still_gives_validated_events(geography: Geography) -> None:
    events = list(Simulator(geography, ["69123"], seed=3).events(250))
    assert len(events) == 250
    assert all(isinstance(e, Event) for e in events)


def test_a_territory_by_departement_and_unknown_communes_are_refused(geography: Geography) -> None:
    communes = territory_communes(geography, [], ["69"])
    assert "69123" in communes and len(communes) > 200
    with pytest.raises(ValueError, match="unknown commune"):
        Simulator(geography, ["99999"])
