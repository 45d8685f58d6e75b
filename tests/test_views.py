"""The views' pure cores on a real database: the same tests on SQLite and on PostgreSQL.

Deliveries are built in memory (as the processor writes them) and applied through ``apply_batch``,
the same function the Kafka runner calls; no broker here.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from scolaflux.consumers import commune, departement, region
from scolaflux.consumers.authority import Authority, UnknownAuthority
from scolaflux.consumers.export import to_csv
from scolaflux.consumers.ledger import CONTENT_TABLES, movements, pupil_years, recompute_pupils
from scolaflux.consumers.projections import project
from scolaflux.consumers.reports import SECTIONS, ReadOptions, section, summary
from scolaflux.consumers.runner import run_retention
from scolaflux.consumers.samples import delivery, encode, sample_stream, uai
from scolaflux.consumers.store import (
    BOOKKEEPING_TABLES,
    Record,
    applied_deliveries,
    apply_batch,
    counters,
    insert_many,
    load_offsets,
    make_engine,
    rejected,
    snapshot,
)
from scolaflux.consumers.views import AuthorityView
from scolaflux.schemas.codec import MARKER
from sqlalchemy import Engine, String, cast, create_engine, insert, select, text

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LYON = Authority("commune", "69123")
RHONE = Authority("departement", "69")
AURA = Authority("region", "84")
SCHOOL_A, SCHOOL_B, SCHOOL_C = uai(690001), uai(690002), uai(690003)
T0 = dt.datetime(2026, 9, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(URL, schema) of a fresh, empty database: a SQLite file, or a new PostgreSQL schema dropped after.

    PostgreSQL must be running (CI starts it): a connection error fails the test, it is not skipped.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'view.sqlite'}", None
        return
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield POSTGRES_URL, schema
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def open_view(database: tuple[str, str | None], authority: Authority, suffix: str = "") -> tuple[Engine, AuthorityView]:
    url, schema = database
    if schema is None:
        url = url.replace(".sqlite", f"{suffix}.sqlite")
    engine = make_engine(url, f"{schema}{suffix}" if schema else None)
    view = AuthorityView(authority)
    view.create(engine)
    return engine, view


class Feed:
    """Applies deliveries to a view as the runner does: encoded, with topic offsets, in batches."""

    def __init__(self, engine: Engine, view: AuthorityView, topic: str = "deliveries") -> None:
        self.engine, self.view, self.topic = engine, view, topic
        self.offsets = count()

    def records(self, items: list[dict | bytes]) -> list[Record]:
        return [
            Record(self.topic, 0, next(self.offsets), item if isinstance(item, bytes) else encode(item), [])
            for item in items
        ]

    def apply(self, *items: dict | bytes):
        return apply_batch(self.engine, self.records(list(items)), self.view)


@pytest.fixture
def lyon(database) -> Feed:
    return Feed(*open_view(database, LYON))


@pytest.fixture
def rhone(database) -> Feed:
    return Feed(*open_view(database, RHONE))


@pytest.fixture
def aura(database) -> Feed:
    return Feed(*open_view(database, AURA))


def child(**overrides) -> dict:
    """The identity fields of a child resident in Lyon (nominative: the commune's list)."""
    fields = {
        "last_name": "Martin",
        "first_name": "Léa",
        "sex": "F",
        "birth_date": dt.date(2016, 5, 4),
        "birth_year": 2016,
        "residence_commune": "69123",
    }
    return {**fields, **overrides}


def enrol(authority: Authority, subject: str, school: str, level: str, when: dt.datetime, **fields) -> dict:
    return delivery(
        "enrolment",
        authority,
        subject=subject,
        event_time=when,
        school=school,
        school_year=fields.pop("school_year", 2026),
        level=level,
        entry_date=when.date(),
        **fields,
    )


def leave(authority: Authority, subject: str, school: str, when: dt.datetime, kind: str = "unknown", **fields) -> dict:
    return delivery(
        "transfer",
        authority,
        subject=subject,
        event_time=when,
        school=school,
        school_year=fields.pop("school_year", 2026),
        exit_date=when.date(),
        destination_kind=kind,
        **fields,
    )


def absence(subject: str, day: dt.date, half_days: int, justified: bool) -> dict:
    return delivery(
        "absence",
        LYON,
        subject=subject,
        event_time=dt.datetime.combine(day, dt.time(9), dt.UTC),
        school=SCHOOL_A,
        absence_date=day,
        half_days=half_days,
        justified=justified,
        absence_reason="illness" if justified else "unjustified",
        **child(),
    )


def rows(feed: Feed, table) -> list[dict]:
    with feed.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(table.select())]


def read(feed: Feed, fn, *args):
    with feed.engine.connect() as conn:
        return fn(conn, *args)


# --- exactly once -----------------------------------------------------------------------------


def test_arrival_and_departure_are_recorded_once_however_often_delivered(lyon: Feed) -> None:
    arrival = enrol(LYON, "123456789AB", SCHOOL_A, "CM1", T0, **child())
    departure = leave(
        LYON, "123456789AB", SCHOOL_A, T0 + dt.timedelta(days=30), "school", destination_school=SCHOOL_B, **child()
    )
    first = lyon.apply(arrival, arrival, departure)  # a retry inside one batch
    again = lyon.apply(departure, arrival)  # and a replay later
    assert (len(first.applied), first.duplicates, len(again.applied), again.duplicates) == (2, 1, 0, 2)
    assert read(lyon, commune.movement_counts) == {"arrival": 1, "departure": 1}
    (moved,) = [m for m in read(lyon, commune.movement_list) if m["kind"] == "departure"]
    assert moved["other_school"] == SCHOOL_B and moved["last_name"] == "Martin"
    assert load_offsets(lyon.engine, "deliveries") == {0: 5}


def apply_in_batches(feed: Feed, stream: list[dict], rng: random.Random, most: int) -> None:
    """Apply ``stream`` in order, cut into batches of 1 to ``most`` deliveries drawn by ``rng``."""
    at = 0
    while at < len(stream):
        size = rng.randint(1, most)
        feed.apply(*stream[at : at + size])
        at += size


def test_cutting_a_stream_into_other_batches_gives_the_same_view(database) -> None:
    stream = sample_stream(AURA, seed=7, pupils=150, years=(2025, 2026))
    whole = Feed(*open_view(database, AURA, "_whole"))
    whole.apply(*stream)
    pieces = Feed(*open_view(database, AURA, "_pieces"))
    rng = random.Random(1)
    apply_in_batches(pieces, stream, rng, most=40)
    tables = [*CONTENT_TABLES, *BOOKKEEPING_TABLES]
    assert snapshot(whole.engine, tables) == snapshot(pieces.engine, tables)
    assert len(snapshot(whole.engine, CONTENT_TABLES)["pupil_years"]) > 100


def test_movements_delivered_in_any_order_and_batches_give_the_same_view(database) -> None:
    # late radiations, enrolments before the transfers that precede them, retries: the years of a
    # pupil are folded in event order whatever the arrival order (corrections and erasures apply to
    # what is there when they arrive, so they are left out here)
    stream = [
        d for d in sample_stream(AURA, seed=11, pupils=150, years=(2025, 2026)) if d["event_type"] != "correction"
    ]
    stream = [d for d in stream if d["event_type"] != "erasure"]
    in_order = Feed(*open_view(database, AURA, "_in_order"))
    in_order.apply(*stream)
    rng = random.Random(5)
    shuffled = stream + rng.sample(stream, 30)
    rng.shuffle(shuffled)
    any_order = Feed(*open_view(database, AURA, "_any_order"))
    apply_in_batches(any_order, shuffled, rng, most=60)
    assert snapshot(in_order.engine, CONTENT_TABLES) == snapshot(any_order.engine, CONTENT_TABLES)
    assert any(d["event_type"] == "transfer" for d in stream)


def test_pupil_years_kept_batch_by_batch_equal_a_recomputation_from_the_movements(database) -> None:
    stream = sample_stream(AURA, seed=13, pupils=200, years=(2024, 2025, 2026))
    assert {"correction", "erasure", "transfer"} <= {d["event_type"] for d in stream}
    feed = Feed(*open_view(database, AURA))
    rng = random.Random(2)
    apply_in_batches(feed, stream, rng, most=80)
    kept = snapshot(feed.engine, [pupil_years])
    with feed.engine.begin() as conn:
        recompute_pupils(conn, conn.execute(select(movements.c.convention_id, movements.c.subject).distinct()).all())
    assert snapshot(feed.engine, [pupil_years]) == kept
    assert len(kept["pupil_years"]) > 200


# --- corrections and erasures -----------------------------------------------------------------


def test_a_correction_updates_what_it_names_and_an_erasure_removes_it(lyon: Feed) -> None:
    arrival = enrol(LYON, "123456789AB", SCHOOL_A, "CM1", T0, **child())
    other = enrol(LYON, "223456789AB", SCHOOL_A, "CE2", T0, **child(first_name="Jules", sex="M"))
    fix = delivery(
        "correction",
        LYON,
        subject="123456789AB",
        event_time=T0 + dt.timedelta(days=2),
        target_ref=arrival["event_ref"],
        changed_fields=["first_name", "level"],
        school=SCHOOL_A,
        level="CM2",
        **child(first_name="Lina"),
    )
    lyon.apply(arrival, other, fix)
    by_subject = {r["subject"]: r for r in rows(lyon, CONTENT_TABLES[2])}  # pupil_years
    assert (by_subject["123456789AB"]["first_name"], by_subject["123456789AB"]["level"]) == ("Lina", "CM2")
    assert (by_subject["223456789AB"]["first_name"], by_subject["223456789AB"]["level"]) == ("Jules", "CE2")

    lyon.apply(delivery("erasure", LYON, subject="223456789AB", event_time=T0 + dt.timedelta(days=3),
                        target_ref=other["event_ref"], erasure_scope="event"))  # fmt: skip
    assert {r["subject"] for r in rows(lyon, CONTENT_TABLES[2])} == {"123456789AB"}
    lyon.apply(absence("123456789AB", dt.date(2026, 10, 5), 2, False))
    lyon.apply(delivery("erasure", LYON, subject="123456789AB", event_time=T0 + dt.timedelta(days=40),
                        erasure_scope="pupil"))  # fmt: skip
    assert [rows(lyon, table) for table in CONTENT_TABLES] == [[], [], [], []]


def test_a_correction_or_erasure_of_one_event_refreshes_the_years_of_the_pupil_whose_row_it_changed(lyon: Feed) -> None:
    # The processors give every event delivery the subject of its own event's pupil; an erasure or
    # correction whose pupil is not the target's (a source's mistake), or a delivery with no subject,
    # must still refresh the years of the pupil whose movement it changed.
    arrival = enrol(LYON, "123456789AB", SCHOOL_A, "CM1", T0, **child())
    fix = delivery("correction", LYON, subject="999999999ZZ", event_time=T0 + dt.timedelta(days=2),
                   target_ref=arrival["event_ref"], changed_fields=["level"], school=SCHOOL_A, level="CM2")  # fmt: skip
    lyon.apply(arrival, fix)
    assert [(r["subject"], r["level"]) for r in rows(lyon, pupil_years)] == [("123456789AB", "CM2")]
    lyon.apply(delivery("erasure", LYON, subject=None, event_time=T0 + dt.timedelta(days=3),
                        target_ref=arrival["event_ref"], erasure_scope="event"))  # fmt: skip
    assert rows(lyon, movements) == [] and rows(lyon, pupil_years) == []


# --- commune ----------------------------------------------------------------------------------


def test_the_instruction_list_holds_resident_children_aged_3_to_16_where_they_are_instructed(lyon: Feed) -> None:
    on = dt.date(2026, 10, 1)
    lyon.apply(
        enrol(LYON, "100000001AB", SCHOOL_A, "CM1", T0, **child(birth_date=dt.date(2016, 5, 4))),
        enrol(LYON, "100000002AB", SCHOOL_A, "PS", T0, **child(birth_date=dt.date(2023, 10, 2))),  # 3 on 2 Oct
        enrol(LYON, "100000003AB", SCHOOL_B, "3e", T0, **child(birth_date=dt.date(2009, 10, 1))),  # 17 on 1 Oct
        enrol(LYON, "100000004AB", SCHOOL_B, "6e", T0, **child(residence_commune="69266")),  # not resident
        enrol(LYON, "100000005AB", SCHOOL_A, "CE1", T0, **child(birth_date=dt.date(2019, 1, 1))),
        leave(LYON, "100000005AB", SCHOOL_A, T0 + dt.timedelta(days=10), "home_instruction", **child()),
        enrol(LYON, "100000006AB", SCHOOL_A, "CP", T0 + dt.timedelta(days=45), **child()),  # arrives in October
    )
    listed = {c["subject"]: c for c in read(lyon, commune.instruction_list, "69123", on)}
    assert set(listed) == {"100000001AB", "100000005AB"}
    assert listed["100000001AB"]["school"] == SCHOOL_A and listed["100000001AB"]["instruction"] == "school"
    assert listed["100000005AB"]["instruction"] == "family instruction"
    later = {c["subject"] for c in read(lyon, commune.instruction_list, "69123", dt.date(2026, 11, 1))}
    assert later == {"100000001AB", "100000002AB", "100000005AB", "100000006AB"}
    months = read(lyon, commune.monthly_lists, "69123", dt.date(2026, 11, 15))
    assert [(m["as_of"], m["children"]) for m in months] == [
        (dt.date(2026, 9, 1), 3),  # PS child not yet 3, the CE1 child not yet gone
        (dt.date(2026, 10, 1), 2),
        (dt.date(2026, 11, 1), 4),
        (dt.date(2026, 11, 15), 4),
    ]


def test_absenteeism_warning_from_four_unjustified_half_days_in_a_calendar_month(lyon: Feed) -> None:
    lyon.apply(
        absence("100000001AB", dt.date(2026, 10, 5), 2, False),
        absence("100000001AB", dt.date(2026, 10, 12), 1, False),
        absence("100000001AB", dt.date(2026, 10, 13), 2, True),  # justified: not counted
        absence("100000001AB", dt.date(2026, 11, 2), 1, False),  # another month
        absence("100000002AB", dt.date(2026, 10, 30), 2, False),
        absence("100000002AB", dt.date(2026, 10, 31), 2, False),
    )
    assert read(lyon, commune.absenteeism_warnings) == [
        {
            "month": "2026-10",
            "last_name": "Martin",
            "first_name": "Léa",
            "residence_commune": "69123",
            "school": SCHOOL_A,
            "unjustified_half_days": 4,
            "subject": "100000002AB",
        }
    ]
    lyon.apply(absence("100000001AB", dt.date(2026, 10, 20), 1, False))
    assert [w["subject"] for w in read(lyon, commune.absenteeism_warnings)] == ["100000001AB", "100000002AB"]


def test_a_child_gone_with_no_known_destination_raises_an_alert_after_the_delay_unless_enrolled(lyon: Feed) -> None:
    gone = T0 + dt.timedelta(days=20)  # 21 September
    lyon.apply(
        enrol(LYON, "100000001AB", SCHOOL_A, "CM1", T0, **child()),
        leave(LYON, "100000001AB", SCHOOL_A, gone, **child()),
        enrol(LYON, "100000002AB", SCHOOL_A, "CM1", T0, **child()),
        leave(LYON, "100000002AB", SCHOOL_A, gone, **child()),
        enrol(LYON, "100000002AB", SCHOOL_B, "CM1", gone + dt.timedelta(days=5), **child()),  # found
    )
    watching = read(lyon, commune.lost_pupils, dt.date(2026, 10, 1), 30)
    assert [(a["subject"], a["status"], a["days_since"]) for a in watching] == [("100000001AB", "watching", 10)]
    alerts = read(lyon, commune.lost_pupils, dt.date(2026, 10, 21), 30)
    assert [(a["subject"], a["status"]) for a in alerts] == [("100000001AB", "alert")]


def test_the_etat_des_mutations_counts_arrivals_and_departures_by_month_and_school(lyon: Feed) -> None:
    lyon.apply(
        enrol(LYON, "100000001AB", SCHOOL_A, "CM1", T0, **child()),
        enrol(LYON, "100000002AB", SCHOOL_A, "CM1", T0, **child()),
        leave(LYON, "100000002AB", SCHOOL_A, T0 + dt.timedelta(days=35), "commune", destination_commune="69266"),
    )
    assert read(lyon, commune.mutations_by_month) == [
        {"month": "2026-09", "school": SCHOOL_A, "arrivals": 2, "departures": 0},
        {"month": "2026-10", "school": SCHOOL_A, "arrivals": 0, "departures": 1},
    ]
    assert [m["kind"] for m in read(lyon, commune.movement_list, "2026-10")] == ["departure"]


# --- département and région -------------------------------------------------------------------


def test_departement_headcounts_follow_transfers_even_when_the_radiation_comes_late(rhone: Feed) -> None:
    p1, p2, p3 = "a" * 32, "b" * 32, "c" * 32
    rhone.apply(
        enrol(RHONE, p1, SCHOOL_A, "6e", T0, residence_commune="69123"),
        enrol(RHONE, p2, SCHOOL_A, "6e", T0, residence_commune="69266"),
        enrol(RHONE, p3, SCHOOL_A, "5e", T0, residence_commune="69123"),
        # p2 is enrolled at B before A's radiation arrives: the radiation must not undo it
        enrol(RHONE, p2, SCHOOL_B, "6e", T0 + dt.timedelta(days=10), residence_commune="69266"),
        leave(RHONE, p2, SCHOOL_A, T0 + dt.timedelta(days=11), "school", destination_school=SCHOOL_B),
        leave(RHONE, p3, SCHOOL_A, T0 + dt.timedelta(days=12), "abroad"),
    )
    counts = {(r["school"], r["level"]): r["pupils"] for r in read(rhone, departement.headcounts)}
    assert counts == {(SCHOOL_A, "6e"): 1, (SCHOOL_B, "6e"): 1}
    moves = {r["school"]: (r["arrivals"], r["departures"]) for r in read(rhone, departement.movements_per_school)}
    assert moves == {SCHOOL_A: (3, 2), SCHOOL_B: (1, 0)}
    origins = {(r["school"], r["residence_commune"]): r["pupils"] for r in read(rhone, departement.origins)}
    assert origins == {(SCHOOL_A, "69123"): 1, (SCHOOL_B, "69266"): 1}


def test_aggregated_cells_are_shown_as_delivered_the_newest_winning_whatever_the_order(rhone: Feed) -> None:
    def cell(minutes: int, count: int | None) -> dict:
        return delivery(
            "enrolment",
            RHONE,
            subject=None,
            event_time=T0 + dt.timedelta(minutes=minutes),
            treatment="aggregated",
            aggregate={"school": SCHOOL_A, "level": "6e", "count": count, "suppressed": count is None},
        )

    rhone.apply(cell(2, 12), cell(1, None))  # the older (suppressed) one arrives last
    assert read(rhone, departement.aggregates) == [
        {"school": SCHOOL_A, "level": "6e", "count": 12, "suppressed": False}
    ]
    rhone.apply(cell(3, None))
    assert read(rhone, departement.aggregates) == [
        {"school": SCHOOL_A, "level": "6e", "count": None, "suppressed": True}
    ]


def test_region_headcounts_by_track_changes_stream_and_projections(aura: Feed) -> None:
    deliveries = []
    for year, cohort in ((2024, {"2nde": 10, "1re": 0, "Tle": 0}), (2025, {"2nde": 12, "1re": 9, "Tle": 0}),
                         (2026, {"2nde": 11, "1re": 10, "Tle": 8})):  # fmt: skip
        start = dt.datetime(year, 9, 2, 8, tzinfo=dt.UTC)
        for level, n in cohort.items():
            for i in range(n):
                deliveries.append(
                    enrol(
                        AURA,
                        f"{level}-{year}-{i}",
                        SCHOOL_C,
                        level,
                        start,
                        school_year=year,
                        track="PRO" if i % 2 else "GT",
                    )  # fmt: skip
                )
    aura.apply(*deliveries)
    now = {(r["level"], r["track"]): r["pupils"] for r in read(aura, departement.headcounts, None, True)}
    assert now == {("2nde", "GT"): 6, ("2nde", "PRO"): 5, ("1re", "GT"): 5, ("1re", "PRO"): 5, ("Tle", "GT"): 4,
                   ("Tle", "PRO"): 4}  # fmt: skip
    assert len(read(aura, region.enrolment_changes)) == 60
    projection = read(aura, region.projections)
    # ratios over 2024→2025 and 2025→2026: 2nde→1re (9+10)/(10+12); 1re→Tle 8/9 (2024 had no 1re)
    assert projection.basis_pairs == ((2024, 2025), (2025, 2026))
    assert "2024→2025, 2025→2026" in projection.basis
    projected = {(r["level"], r["school_year"]): r["projected"] for r in projection.rows}
    entry = (10 + 12 + 11) / 3
    assert projected[("2nde", 2027)] == round(entry)
    assert projected[("1re", 2027)] == round(11 * 19 / 22)
    assert projected[("Tle", 2027)] == round(10 * 8 / 9)
    assert projected[("Tle", 2029)] == round(entry * 19 / 22 * 8 / 9)
    assert {year for _, year in projected} == {2027, 2028, 2029}


def test_projections_need_two_consecutive_years_and_say_so() -> None:
    lone = project({("X", "2nde", 2026): 30}, ("2nde", "1re", "Tle"))
    assert lone.rows == [] and "need two consecutive school years" in lone.basis and "2026" in lone.basis
    # a school with no pair of its own takes the ratio of all schools
    mixed = project(
        {("A", "2nde", 2025): 10, ("A", "1re", 2026): 8, ("A", "2nde", 2026): 10, ("B", "2nde", 2026): 5},
        ("2nde", "1re"),
        horizon=1,
    )
    by_school = {r.school: (r.value, r.basis) for r in mixed.ratios}
    assert by_school == {"A": (0.8, "school"), "B": (0.8, "all schools")}


# --- bad input, retention ---------------------------------------------------------------------


def test_deliveries_that_cannot_apply_are_set_aside_with_their_reason_and_the_rest_applied(lyon: Feed) -> None:
    good = enrol(LYON, "100000001AB", SCHOOL_A, "CM1", T0, **child())
    no_school = enrol(LYON, "100000002AB", SCHOOL_A, "CM1", T0, **child())
    del no_school["school"]
    elsewhere = enrol(RHONE, "c" * 32, SCHOOL_A, "6e", T0)
    unknown_version = MARKER + b"\x01" * 8 + b"\x00"
    outcome = lyon.apply(unknown_version, no_school, good, elsewhere, b"not avro")
    assert len(outcome.applied) == 1
    reasons = sorted((r["category"], r["reason"]) for r in read(lyon, rejected))
    assert [category for category, _ in reasons] == ["decode", "decode", "invalid", "invalid"]
    text_ = " | ".join(reason for _, reason in reasons)
    assert "unknown schema fingerprint" in text_ and "school: required" in text_ and "not to commune:69123" in text_
    assert "100000002AB" not in text_  # no pupil identifier in a reason
    assert read(lyon, counters)["rejected"] == 4
    assert load_offsets(lyon.engine, "deliveries") == {0: 5}  # nothing lost: the offsets moved past them


def test_bulk_inserts_keep_or_replace_rows_as_one_insert_per_row_would(database) -> None:
    # the PostgreSQL path sends one statement of column arrays: a row already stored, a key twice in
    # one call, a NULL and a string at its column's length must end as row-by-row inserts leave them
    engine, _view = open_view(database, LYON)
    year = {"convention_id": "c", "subject": "s", "school_year": 2026, "enrolled": True, "level": "2NDE"}
    keys = ["convention_id", "subject", "school_year"]
    with engine.begin() as conn:
        insert_many(conn, pupil_years, [year], keys, replace=True)
        later = [{**year, "level": "1ERE", "school": "x" * 8}, {**year, "level": "TLE", "school": None}]
        insert_many(conn, pupil_years, later, keys, replace=True)
        kept = [{**year, "subject": "t"}, {**year, "subject": "t", "level": "1ERE"}]
        insert_many(conn, pupil_years, kept, keys)
    with engine.connect() as conn:
        stored = conn.execute(select(pupil_years.c.subject, pupil_years.c.level, pupil_years.c.school)).all()
    assert sorted(stored) == [("s", "TLE", None), ("t", "2NDE", None)]


def test_bulk_inserts_store_dates_and_times_as_sqlalchemys_own_insert_does(database) -> None:
    # the SQLite path converts values itself (faster than SQLAlchemy's converters, same text): aware,
    # naive (SQLite), other offsets, no microseconds, the ends of the calendar, and one object in two rows
    engine, _view = open_view(database, LYON)
    moments = [
        T0,
        T0.replace(microsecond=123456),
        T0.astimezone(dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ]
    moments.append(moments[-1])
    if database[0].startswith("sqlite"):  # psycopg will not send naive and aware times in one array
        moments.append(T0.replace(tzinfo=None))
    days = [None, dt.date(2026, 9, 1), dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(2013, 2, 3), None]

    def applied(prefix: str) -> list[dict]:
        return [
            {
                **{"delivery_id": f"{prefix}{i}", "convention_id": "c", "topic": "t", "partition": 0, "offset": i},
                **{"event_time": moment, "recorded_at": moment, "delivered_at": T0, "applied_at": T0},
            }
            for i, moment in enumerate(moments)
        ]

    def years(prefix: str) -> list[dict]:
        return [
            {"convention_id": "c", "subject": f"{prefix}{i}", "school_year": 2026, "enrolled": i % 2 == 0}
            | {"birth_date": day, "since": day, "left_on": days[0]}
            for i, day in enumerate(days)
        ]

    with engine.begin() as conn:
        insert_many(conn, applied_deliveries, applied("bulk-"))
        conn.execute(insert(applied_deliveries), applied("one-"))
        insert_many(conn, pupil_years, years("bulk-year-"), ["convention_id", "subject", "school_year"], replace=True)
        conn.execute(insert(pupil_years), years("one-year-"))
    as_text = [cast(c, String) for c in applied_deliveries.c if c.name != "delivery_id"]
    year_text = [cast(c, String) for c in pupil_years.c if c.name != "subject"]
    with engine.connect() as conn:
        rows = [*conn.execute(select(applied_deliveries.c.delivery_id, *as_text))]
        rows += conn.execute(select(pupil_years.c.subject, *year_text))
    stored = {key: values for key, *values in rows}
    assert len(stored) == 2 * (len(moments) + len(days))
    assert all(stored[f"bulk-{i}"] == stored[f"one-{i}"] for i in range(len(moments)))
    assert all(stored[f"bulk-year-{i}"] == stored[f"one-year-{i}"] for i in range(len(days)))


def test_retention_deletes_expired_rows_counts_them_and_updates_what_derives_from_them(lyon: Feed) -> None:
    lyon.apply(
        enrol(LYON, "100000001AB", SCHOOL_A, "CM1", T0 - dt.timedelta(days=400), school_year=2025, **child()),
        absence("100000001AB", dt.date(2025, 6, 5), 2, False),
        enrol(LYON, "100000002AB", SCHOOL_A, "CM1", T0, **child()),
    )
    deleted = run_retention(lyon.engine, {None: 365}, now=T0 + dt.timedelta(days=1))
    assert deleted == 2
    assert {r["subject"] for r in rows(lyon, CONTENT_TABLES[2])} == {"100000002AB"}
    assert read(lyon, counters)["retention_deleted"] == 2
    assert run_retention(lyon.engine, {None: 365}, now=T0 + dt.timedelta(days=1)) == 0


# --- reading: sections, CSV -------------------------------------------------------------------


def test_every_section_of_every_level_reads_and_the_csv_opens_in_a_french_spreadsheet(database) -> None:
    for authority in (LYON, RHONE, AURA):
        feed = Feed(*open_view(database, authority, f"_{authority.level}"))
        feed.apply(*sample_stream(authority, seed=3, pupils=60, years=(2025, 2026)))
        options = ReadOptions(as_of=dt.date(2026, 12, 1))
        with feed.engine.connect() as conn:
            assert summary(conn, authority, options)["deliveries_applied"] > 60
            for name in SECTIONS[authority.level]:
                part = section(conn, authority, name, options)
                assert part.rows or name in ("aggregates", "lost-pupils", "absenteeism"), name
                csv_text = to_csv(part)
                assert csv_text.startswith("\ufeff") and csv_text.count("\r\n") == len(part.rows) + 1
                if part.rows:
                    assert csv_text.splitlines()[0].lstrip("\ufeff").split(";") == part.columns
    ratios = to_csv(section_stub())
    assert ratios.splitlines()[1] == f"{SCHOOL_A};2nde;1re;0,8636;school"  # decimal comma under ';'


def section_stub():
    from scolaflux.consumers.reports import Section

    row = {"school": SCHOOL_A, "from_level": "2nde", "to_level": "1re", "ratio": 0.8636, "basis": "school"}
    return Section("ratios", "ratios", [row], list(row))


def test_an_authority_is_named_level_and_code() -> None:
    assert Authority.parse("commune:69123") == LYON and Authority.parse("région-84") == AURA
    assert Authority.parse("departement:2a").code == "2A"
    with pytest.raises(UnknownAuthority, match="level:code"):
        Authority.parse("ville:69123")
