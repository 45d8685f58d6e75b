"""What every view keeps from its deliveries, and how a delivery changes it.

Three kinds of rows, whatever the authority:
- ``movements``: one row per enrolment (arrival, *inscription*) or transfer (departure,
  *radiation*) delivered, with the fields the convention allowed (null otherwise);
- ``absences``: one row per absence delivered (half-days, justified or not);
- ``pupil_years``: derived, one row per pupil and school year: where the pupil stands (enrolled in
  a school at a level, or gone, and where to). It is recomputed from the pupil's movements whenever
  one of them changes, so corrections and erasures flow into it, and it never depends on how the
  deliveries were cut into batches;
- ``aggregate_cells``: under an aggregated convention, each cell (school, level) as last delivered.

Rows are scoped by convention: pseudonyms differ between conventions by design, so one pupil
delivered under two conventions of the same authority is two subjects.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from itertools import groupby
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from ..schemas.codec import delivery_codec
from ..schemas.errors import InvalidEvent
from .authority import Authority
from .store import Record, add_to_counter, applied_deliveries, insert_many

metadata = MetaData()


def _identity_columns() -> list[Column[Any]]:
    return [
        Column("last_name", String(200)),
        Column("first_name", String(200)),
        Column("sex", String(1)),
        Column("birth_date", Date),
        Column("birth_year", Integer),
        Column("residence_commune", String(5)),
    ]


movements = Table(
    "movements",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("convention_id", String(100), nullable=False),
    Column("event_ref", String(64), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("kind", String(10), nullable=False),  # arrival | departure
    *_identity_columns(),
    Column("school", String(8)),
    Column("school_commune", String(5)),
    Column("school_year", Integer, nullable=False),
    Column("level", String(5)),
    Column("track", String(5)),
    Column("other_school", String(8)),
    Column("other_commune", String(5)),
    Column("destination_kind", String(20)),
    Column("movement_date", Date, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Index("ix_movements_subject", "convention_id", "subject"),
    Index("ix_movements_ref", "convention_id", "event_ref"),
    Index("ix_movements_time", "event_time"),
)

absences = Table(
    "absences",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("convention_id", String(100), nullable=False),
    Column("event_ref", String(64), nullable=False),
    Column("subject", String(64), nullable=False),
    *_identity_columns(),
    Column("school", String(8)),
    Column("school_year", Integer),
    Column("absence_date", Date, nullable=False),
    Column("half_days", Integer, nullable=False),
    Column("justified", Boolean, nullable=False),
    Column("reason", String(20)),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Index("ix_absences_subject", "convention_id", "subject"),
    Index("ix_absences_ref", "convention_id", "event_ref"),
)

pupil_years = Table(
    "pupil_years",
    metadata,
    Column("convention_id", String(100), primary_key=True),
    Column("subject", String(64), primary_key=True),
    Column("school_year", Integer, primary_key=True),
    *_identity_columns(),
    Column("enrolled", Boolean, nullable=False),
    Column("school", String(8)),
    Column("school_commune", String(5)),
    Column("level", String(5)),
    Column("track", String(5)),
    Column("since", Date),
    Column("left_on", Date),
    Column("destination_kind", String(20)),
    Column("destination_school", String(8)),
    Column("destination_commune", String(5)),
    Index("ix_pupil_years_school", "school_year", "enrolled", "school"),
)

aggregate_cells = Table(
    "aggregate_cells",
    metadata,
    Column("convention_id", String(100), primary_key=True),
    Column("school", String(8), primary_key=True),
    Column("level", String(5), primary_key=True),
    Column("count", Integer),
    Column("suppressed", Boolean, nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    Column("delivery_id", String(36), nullable=False),
)

CONTENT_TABLES = (movements, absences, pupil_years, aggregate_cells)
IDENTITY = ("last_name", "first_name", "sex", "birth_date", "birth_year", "residence_commune")
"""Facts about the pupil rather than one event: a correction of one of them applies to every row."""
EVENT_FACTS = ("school", "school_commune", "level", "track")
"""Facts of one event: a correction of one of them applies to the row it names."""
REQUIRED: dict[str, tuple[str, ...]] = {
    "enrolment": ("subject", "school"),
    "transfer": ("subject", "school"),
    "absence": ("subject", "absence_date", "half_days", "justified"),
    "correction": ("subject",),
    "erasure": ("erasure_scope",),
}
"""Fields without which a delivery of each type cannot be applied (it is set aside, with the reason)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery, decoded and checked, as the views apply it."""

    data: dict[str, Any]

    @property
    def delivery_id(self) -> str:
        return self.data["delivery_id"]

    @property
    def convention_id(self) -> str:
        return self.data["convention_id"]

    @property
    def event_time(self) -> dt.datetime:
        return self.data["event_time"]

    @property
    def recorded_at(self) -> dt.datetime:
        return self.data["recorded_at"]

    @property
    def delivered_at(self) -> dt.datetime:
        return self.data["delivered_at"]


def parse_delivery(record: Record, authority: Authority | None) -> Delivery:
    """Decode and check one delivery; raise ``DecodeError``/``InvalidEvent`` saying why it cannot apply.

    Messages name fields, never values (no pupil identifier in a reason).
    """
    data = delivery_codec().decode(record.value)
    if authority is not None and (data["authority_level"], data["authority_code"]) != (authority.level, authority.code):
        raise InvalidEvent(
            f"authority: delivered to {data['authority_level']}:{data['authority_code']}, not to {authority}"
        )
    if data["identity_treatment"] == "aggregated" or data.get("aggregate") is not None:
        if data.get("aggregate") is None:
            raise InvalidEvent("aggregate: required under an aggregated convention, missing from the delivery")
        return Delivery(data)
    required = list(REQUIRED[data["event_type"]])
    if data["event_type"] == "erasure":
        required.append("subject" if data.get("erasure_scope") == "pupil" else "target_ref")
    missing = [name for name in required if data.get(name) is None]
    if missing:
        raise InvalidEvent(f"{', '.join(missing)}: required for a {data['event_type']} delivery, missing")
    return Delivery(data)


def apply_deliveries(conn: Connection, deliveries: Iterable[Delivery]) -> None:
    """Apply deliveries in order inside the open transaction, keeping the touched pupils' years current.

    New movements extend their pupils' years from the movements already stored (``add_movements``);
    the pupils whose rows a correction or an erasure changed in place (as the rows name them, not as
    the delivery does) are recomputed from what remains.
    """
    pending: dict[str, list[dict[str, Any]]] = {"movements": [], "absences": []}
    changed_in_place: set[tuple[str, str]] = set()

    def flush() -> None:
        add_movements(conn, pending["movements"])
        insert_many(conn, absences, pending["absences"], ["delivery_id"])
        pending["movements"], pending["absences"] = [], []

    for delivery in deliveries:
        d = delivery.data
        if d.get("aggregate") is not None:
            _apply_cell(conn, d)
            continue
        match d["event_type"]:
            case "enrolment" | "transfer":
                pending["movements"].append(movement_row(d))
            case "absence":
                pending["absences"].append(absence_row(d))
            case "correction" | "erasure" as kind:
                flush()
                changed_in_place |= (_correct if kind == "correction" else _erase)(conn, d)
    flush()
    recompute_pupils(conn, changed_in_place)


def school_year_of(day: dt.date) -> int:
    """The school year a date falls in, named by the year of its rentrée (September)."""
    return day.year if day.month >= 8 else day.year - 1


def _identity(d: dict[str, Any]) -> dict[str, Any]:
    return {name: d.get(name) for name in IDENTITY}


def movement_row(d: dict[str, Any]) -> dict[str, Any]:
    """The ``movements`` row of an enrolment (arrival) or transfer (departure) delivery."""
    arrival = d["event_type"] == "enrolment"
    day = (d.get("entry_date") if arrival else d.get("exit_date")) or d["event_time"].date()
    return {
        "delivery_id": d["delivery_id"],
        "convention_id": d["convention_id"],
        "event_ref": d["event_ref"],
        "subject": d["subject"],
        "kind": "arrival" if arrival else "departure",
        **_identity(d),
        "school": d.get("school"),
        "school_commune": d.get("school_commune"),
        "school_year": d.get("school_year") or school_year_of(day),
        "level": d.get("level"),
        "track": d.get("track"),
        "other_school": d.get("origin_school") if arrival else d.get("destination_school"),
        "other_commune": None if arrival else d.get("destination_commune"),
        "destination_kind": None if arrival else d.get("destination_kind"),
        "movement_date": day,
        "event_time": d["event_time"],
    }


def absence_row(d: dict[str, Any]) -> dict[str, Any]:
    """The ``absences`` row of an absence delivery."""
    return {
        "delivery_id": d["delivery_id"],
        "convention_id": d["convention_id"],
        "event_ref": d["event_ref"],
        "subject": d["subject"],
        **_identity(d),
        "school": d.get("school"),
        "school_year": d.get("school_year"),
        "absence_date": d["absence_date"],
        "half_days": d["half_days"],
        "justified": d["justified"],
        "reason": d.get("absence_reason"),
        "event_time": d["event_time"],
    }


def corrected_fields(d: dict[str, Any]) -> dict[str, Any]:
    """The corrected values a correction carries: the fields it names as changed that it delivers
    (or, naming none, its level and track)."""
    named = [name.removeprefix("pupil.").removeprefix("payload.") for name in d.get("changed_fields") or []]
    names = named or ["level", "track"]
    return {name: d[name] for name in names if name in IDENTITY + EVENT_FACTS and d.get(name) is not None}


def _changed(conn: Connection, table: Table, statement: Any) -> set[tuple[str, str]]:
    """Run an update or delete of ``table``; the (convention, subject) pupils of the rows it changed."""
    return {
        (convention, subject)
        for convention, subject in conn.execute(statement.returning(table.c.convention_id, table.c.subject))
    }


def _correct(conn: Connection, d: dict[str, Any]) -> set[tuple[str, str]]:
    values = corrected_fields(d)
    pupil_facts = {k: v for k, v in values.items() if k in IDENTITY}
    event_facts = {k: v for k, v in values.items() if k in EVENT_FACTS}
    changed: set[tuple[str, str]] = set()
    for table in (movements, absences):
        of_convention = table.c.convention_id == d["convention_id"]
        if pupil_facts:
            of_pupil = update(table).where(of_convention, table.c.subject == d["subject"])
            changed |= _changed(conn, table, of_pupil.values(**pupil_facts))
        facts = {k: v for k, v in event_facts.items() if k in table.c}
        if facts and d.get("target_ref"):
            of_event = update(table).where(of_convention, table.c.event_ref == d["target_ref"])
            changed |= _changed(conn, table, of_event.values(**facts))
    return changed


def _erase(conn: Connection, d: dict[str, Any]) -> set[tuple[str, str]]:
    changed: set[tuple[str, str]] = set()
    for table in (movements, absences):
        of_convention = table.c.convention_id == d["convention_id"]
        if d["erasure_scope"] == "pupil":
            changed |= _changed(conn, table, delete(table).where(of_convention, table.c.subject == d["subject"]))
        else:
            changed |= _changed(conn, table, delete(table).where(of_convention, table.c.event_ref == d["target_ref"]))
    return changed


def _apply_cell(conn: Connection, d: dict[str, Any]) -> None:
    """Keep the newest delivery of each cell (by delivery time, then id): independent of arrival order."""
    cell = d["aggregate"]
    key = {"convention_id": d["convention_id"], "school": cell["school"], "level": cell["level"]}
    current = conn.execute(
        select(aggregate_cells.c.delivered_at, aggregate_cells.c.delivery_id).where(
            *(aggregate_cells.c[k] == v for k, v in key.items())
        )
    ).first()
    values = {
        "count": cell.get("count"),
        "suppressed": cell["suppressed"],
        "delivered_at": d["delivered_at"],
        "delivery_id": d["delivery_id"],
    }
    if current is None:
        conn.execute(insert(aggregate_cells).values(**key, **values))
    elif (_naive(d["delivered_at"]), d["delivery_id"]) > (_naive(current[0]), current[1]):
        conn.execute(
            update(aggregate_cells).where(*(aggregate_cells.c[k] == v for k, v in key.items())).values(**values)
        )


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def add_movements(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert new ``movements`` rows and bring their pupils' years up to date.

    The years are folded from each pupil's stored movements and the new ones, in event order, so
    a late delivery (an older event) lands where it belongs. Movements are only added here, so no
    year of a pupil disappears: the folded years replace or join the stored ones (an upsert).
    """
    if not rows:
        return
    by_pupil: dict[tuple[str, str], dict[str, Any]] = {}
    for row in stored_movements(conn, {(row["convention_id"], row["subject"]) for row in rows}):
        by_pupil.setdefault((row["convention_id"], row["subject"]), {})[row["delivery_id"]] = row
    for row in rows:  # a stored row of the same delivery id wins, as the insert below leaves it
        by_pupil.setdefault((row["convention_id"], row["subject"]), {}).setdefault(row["delivery_id"], row)
    insert_many(conn, movements, rows, ["delivery_id"])
    years = [year for pupil in by_pupil.values() for year in fold_years(in_event_order(pupil.values()))]
    insert_many(conn, pupil_years, years, ["convention_id", "subject", "school_year"], replace=True)


def stored_movements(conn: Connection, pupils: Iterable[tuple[str, str]]) -> Iterator[Any]:
    """The stored movements of the (convention, subject) pupils, in no particular order.

    One statement whatever their number, answered through the (convention, subject) index: the
    pairs go as two arrays to PostgreSQL, as one JSON list to SQLite (``json_each``).
    """
    keys = sorted(pupils)
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        conventions, subjects = (list(column) for column in zip(*keys, strict=True))
        yield from conn.execute(_movements_among(), {"conventions": conventions, "subjects": subjects}).mappings()
    else:
        pairs = json.dumps([[convention, subject] for convention, subject in keys])
        yield from conn.execute(_movements_in_json(), {"pairs": pairs}).mappings()


@cache
def _movements_in_json() -> Select[Any]:
    """The movements of the (convention, subject) pairs given as the JSON list ``pairs`` (SQLite)."""
    wanted = (
        text(
            "SELECT json_extract(value, '$[0]') AS convention_id, json_extract(value, '$[1]') AS subject"
            " FROM json_each(:pairs)"
        )
        .columns(column("convention_id", String), column("subject", String))
        .cte("wanted")
    )
    return select(movements).join(
        wanted, and_(movements.c.convention_id == wanted.c.convention_id, movements.c.subject == wanted.c.subject)
    )


@cache
def _movements_among() -> Select[Any]:
    """The movements of the (convention, subject) pairs given as two arrays (PostgreSQL)."""
    wanted = (
        func.unnest(bindparam("conventions", type_=ARRAY(String())), bindparam("subjects", type_=ARRAY(String())))
        .table_valued("convention_id", "subject")
        .render_derived(name="wanted")
    )
    return select(movements).join(
        wanted, and_(movements.c.convention_id == wanted.c.convention_id, movements.c.subject == wanted.c.subject)
    )


def event_order(row: Any) -> tuple[int, dt.datetime, str]:
    """The order in which a pupil's movements are folded: school year, event time, delivery id."""
    return row["school_year"], _naive(row["event_time"]), row["delivery_id"]


def in_event_order(rows: Collection[Any]) -> Collection[Any]:
    """A pupil's movements sorted by ``event_order`` (a single one as it is: most pupils of a batch)."""
    return sorted(rows, key=event_order) if len(rows) > 1 else rows


def recompute_pupils(conn: Connection, keys: Iterable[tuple[str, str]], chunk: int = 500) -> None:
    """Rewrite the ``pupil_years`` rows of the (convention, subject) pupils from the movements that remain."""
    pupils = sorted(set(keys))
    by_pupil: dict[tuple[str, str], list[Any]] = {}
    for row in stored_movements(conn, pupils):
        by_pupil.setdefault((row["convention_id"], row["subject"]), []).append(row)
    for start in range(0, len(pupils), chunk):
        wanted = pupils[start : start + chunk]
        for convention_id, subjects in groupby(wanted, key=lambda pupil: pupil[0]):
            of_convention = pupil_years.c.convention_id == convention_id
            conn.execute(delete(pupil_years).where(of_convention, pupil_years.c.subject.in_([s for _, s in subjects])))
    years = [year for rows in by_pupil.values() for year in fold_years(in_event_order(rows))]
    insert_many(conn, pupil_years, years)


def fold_years(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Where a pupil stands in each school year, from its movements in event order (pure).

    An enrolment puts the pupil in its school; a transfer takes the pupil out only of the school it
    names (a radiation that arrives after the enrolment elsewhere does not undo that enrolment).
    """
    years: dict[int, dict[str, Any]] = {}
    for row in rows:
        state = years.get(row["school_year"])
        if state is None:
            state = years[row["school_year"]] = {
                "convention_id": row["convention_id"],
                "subject": row["subject"],
                "school_year": row["school_year"],
                **_NO_YEAR,
            }
        for name in IDENTITY:
            if row[name] is not None:
                state[name] = row[name]
        if row["kind"] == "arrival":
            for name in EVENT_FACTS:
                state[name] = row[name]
            state.update(_NOWHERE)
            state["enrolled"], state["since"] = True, row["movement_date"]
        elif not state["enrolled"] or state["school"] == row["school"]:
            for name in EVENT_FACTS:
                state[name] = row[name]
            state["enrolled"], state["left_on"] = False, row["movement_date"]
            state["destination_kind"] = row["destination_kind"]
            state["destination_school"], state["destination_commune"] = row["other_school"], row["other_commune"]
    return list(years.values())


_NOWHERE = {
    "enrolled": False,
    "left_on": None,
    "destination_kind": None,
    "destination_school": None,
    "destination_commune": None,
}
_NO_YEAR = {**dict.fromkeys(IDENTITY), **_NOWHERE, **dict.fromkeys(EVENT_FACTS), "since": None}
"""A pupil's year before its first movement (``fold_years``)."""


def apply_retention(conn: Connection, cutoffs: dict[str | None, dt.datetime]) -> int:
    """Delete rows whose event is older than their convention's cutoff (key ``None``: every other
    convention); recompute the pupils concerned; count the deletion. Returns rows deleted."""
    deleted = 0
    touched: set[tuple[str, str]] = set()
    for table in (movements, absences):
        expired = _expired(table, cutoffs)
        if expired is None:
            continue
        if table is movements:
            touched.update(conn.execute(select(table.c.convention_id, table.c.subject).where(expired)))
        deleted += conn.execute(delete(table).where(expired)).rowcount
    bookkeeping = _expired(applied_deliveries, cutoffs)
    if bookkeeping is not None:
        conn.execute(delete(applied_deliveries).where(bookkeeping))
    recompute_pupils(conn, touched)
    if deleted:
        add_to_counter(conn, "retention_deleted", deleted)
    return deleted


def _expired(table: Table, cutoffs: dict[str | None, dt.datetime]) -> Any:
    named = [c for c in cutoffs if c is not None]
    clauses = [and_(table.c.convention_id == c, table.c.event_time < cutoffs[c]) for c in named]
    if None in cutoffs:
        clauses.append(and_(table.c.convention_id.not_in(named), table.c.event_time < cutoffs[None]))
    return or_(*clauses) if clauses else None


__all__ = [
    "CONTENT_TABLES",
    "Delivery",
    "absences",
    "aggregate_cells",
    "apply_deliveries",
    "apply_retention",
    "movements",
    "parse_delivery",
    "pupil_years",
]
