"""What a commune reads from its view (Code de l'éducation L131-6, R131-3, L131-8).

- arrivals and departures of children (*mouvements*), and the monthly *état des mutations*;
- the compulsory-instruction list (*liste des enfants soumis à l'obligation d'instruction*):
  resident children aged 3 to 16 and where each is instructed, as on the 1st of each month and now;
- absenteeism warnings: 4 or more unjustified half-days in a calendar month;
- children who left with no known destination and are not enrolled anywhere ``days`` later
  (the alert a "lost pupil" register gives).

All of these are read from the ledger at query time, as of a date, so they never depend on the
wall clock at which deliveries were applied.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, func, select

from .authority import Authority
from .ledger import absences, movements, school_year_of
from .views import AuthorityView

ABSENTEEISM_THRESHOLD = 4
"""Unjustified half-days in a month from which the family is warned (L131-8)."""
WHERE = {
    "home_instruction": "family instruction",
    "abroad": "abroad",
    "unknown": "unknown destination",
    "school": "moving school",
    "commune": "moving commune",
}


class CommuneView(AuthorityView):
    """A commune's view (kept for the foundation's callers; any ``AuthorityView`` of a commune)."""

    def __init__(self, code: str | None = None) -> None:
        super().__init__(Authority("commune", code) if code else None)


def movement_counts(conn: Connection) -> dict[str, int]:
    """How many arrivals and departures the view holds."""
    rows = conn.execute(select(movements.c.kind, func.count()).group_by(movements.c.kind))
    return {kind: count for kind, count in rows}


def recent_movements(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest arrivals and departures, newest first."""
    query = select(movements).order_by(movements.c.event_time.desc(), movements.c.delivery_id).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


MOVEMENT_COLUMNS = (
    "movement_date",
    "kind",
    "last_name",
    "first_name",
    "birth_date",
    "residence_commune",
    "school",
    "school_commune",
    "level",
    "other_school",
    "other_commune",
    "destination_kind",
    "subject",
)


def movement_list(conn: Connection, month: str | None = None) -> list[dict[str, Any]]:
    """Arrivals and departures in date order; ``month`` (YYYY-MM) keeps one month: the *état des mutations*."""
    query = select(*(movements.c[name] for name in MOVEMENT_COLUMNS)).order_by(
        movements.c.movement_date, movements.c.event_time, movements.c.delivery_id
    )
    if month:
        first = dt.date.fromisoformat(f"{month}-01")
        query = query.where(movements.c.movement_date >= first, movements.c.movement_date < _next_month(first))
    return [dict(row._mapping) for row in conn.execute(query)]


def mutations_by_month(conn: Connection) -> list[dict[str, Any]]:
    """The monthly *état des mutations*: arrivals and departures per month and school."""
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"arrivals": 0, "departures": 0})
    for row in conn.execute(select(movements.c.movement_date, movements.c.school, movements.c.kind)):
        cell = counts[(row.movement_date.strftime("%Y-%m"), row.school or "")]
        cell["arrivals" if row.kind == "arrival" else "departures"] += 1
    return [{"month": month, "school": school, **cell} for (month, school), cell in sorted(counts.items())]


def instruction_list(conn: Connection, commune: str | None, as_of: dt.date) -> list[dict[str, Any]]:
    """Resident children aged 3 to 16 on ``as_of`` and where each is instructed then."""
    children = []
    for state in _states_as_of(conn, as_of):
        age = _age(state, as_of)
        if age is None or not 3 <= age <= 16:
            continue
        if commune is not None and state["residence_commune"] != commune:
            continue
        children.append(
            {
                "last_name": state["last_name"],
                "first_name": state["first_name"],
                "sex": state["sex"],
                "birth_date": state["birth_date"],
                "age": age,
                "residence_commune": state["residence_commune"],
                "instruction": state["instruction"],
                "school": state["school"],
                "level": state["level"],
                "level_last_year": state["levels"].get(school_year_of(as_of) - 1),
                "since": state["since"],
                "subject": state["subject"],
            }
        )
    return sorted(children, key=lambda c: (c["last_name"] or "", c["first_name"] or "", c["subject"]))


def monthly_lists(conn: Connection, commune: str | None, as_of: dt.date) -> list[dict[str, Any]]:
    """The list as it stood on the 1st of each month since the first movement, and on ``as_of``: counts."""
    first = conn.execute(select(func.min(movements.c.movement_date))).scalar()
    if first is None:
        return []
    dates = [*_firsts_of_month(first, as_of), as_of]
    summary = []
    for day in dict.fromkeys(dates):
        children = instruction_list(conn, commune, day)
        counts = dict.fromkeys(("at_school", "family_instruction", "abroad", "unknown_destination", "moving"), 0)
        for child in children:
            counts[_COUNTED_AS.get(child["instruction"], "moving")] += 1
        summary.append({"as_of": day, "children": len(children), **counts})
    return summary


_COUNTED_AS = {
    "school": "at_school",
    "family instruction": "family_instruction",
    "abroad": "abroad",
    "unknown destination": "unknown_destination",
}


def absenteeism_warnings(conn: Connection, threshold: int = ABSENTEEISM_THRESHOLD) -> list[dict[str, Any]]:
    """Pupils with ``threshold`` or more unjustified half-days in a calendar month (L131-8)."""
    totals: dict[tuple[str, str, str], dict[str, Any]] = {}
    query = select(absences).where(absences.c.justified.is_(False)).order_by(absences.c.absence_date)
    for row in conn.execute(query).mappings():
        key = (row["absence_date"].strftime("%Y-%m"), row["convention_id"], row["subject"])
        entry = totals.setdefault(
            key,
            {
                "month": key[0],
                "last_name": row["last_name"],
                "first_name": row["first_name"],
                "residence_commune": row["residence_commune"],
                "school": row["school"],
                "unjustified_half_days": 0,
                "subject": row["subject"],
            },
        )
        entry["unjustified_half_days"] += row["half_days"]
    warned = [entry for entry in totals.values() if entry["unjustified_half_days"] >= threshold]
    return sorted(warned, key=lambda e: (e["month"], e["last_name"] or "", e["subject"]))


def lost_pupils(conn: Connection, as_of: dt.date, days: int) -> list[dict[str, Any]]:
    """Children who left with no known destination and were not enrolled anywhere since.

    ``status`` is ``alert`` once ``days`` have passed since the exit date, ``watching`` before.
    """
    later_arrivals: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
    for row in conn.execute(
        select(movements.c.convention_id, movements.c.subject, movements.c.movement_date).where(
            movements.c.kind == "arrival"
        )
    ):
        later_arrivals[(row.convention_id, row.subject)].append(row.movement_date)
    query = (
        select(movements)
        .where(movements.c.kind == "departure", movements.c.destination_kind == "unknown")
        .where(movements.c.movement_date <= as_of)
        .order_by(movements.c.movement_date, movements.c.delivery_id)
    )
    found = []
    for row in conn.execute(query).mappings():
        arrivals = later_arrivals[(row["convention_id"], row["subject"])]
        if any(row["movement_date"] <= day <= as_of for day in arrivals):
            continue
        waited = (as_of - row["movement_date"]).days
        found.append(
            {
                "status": "alert" if waited >= days else "watching",
                "left_on": row["movement_date"],
                "days_since": waited,
                "last_name": row["last_name"],
                "first_name": row["first_name"],
                "birth_date": row["birth_date"],
                "residence_commune": row["residence_commune"],
                "school": row["school"],
                "level": row["level"],
                "subject": row["subject"],
            }
        )
    return found


def _states_as_of(conn: Connection, as_of: dt.date) -> Iterator[dict[str, Any]]:
    query = (
        select(movements)
        .where(movements.c.movement_date <= as_of)
        .order_by(
            movements.c.convention_id,
            movements.c.subject,
            movements.c.movement_date,
            movements.c.event_time,
            movements.c.delivery_id,
        )
    )
    state: dict[str, Any] | None = None
    for row in conn.execute(query).mappings():
        if state is None or (state["convention_id"], state["subject"]) != (row["convention_id"], row["subject"]):
            if state is not None:
                yield state
            state = {"convention_id": row["convention_id"], "subject": row["subject"], "levels": {}, "school": None}
            state.update(dict.fromkeys(("last_name", "first_name", "sex", "birth_date", "birth_year")))
            state.update(residence_commune=None, instruction=None, level=None, since=None)
        for name in ("last_name", "first_name", "sex", "birth_date", "birth_year", "residence_commune"):
            if row[name] is not None:
                state[name] = row[name]
        if row["level"]:
            state["levels"][row["school_year"]] = row["level"]
        if row["kind"] == "arrival":
            state.update(instruction="school", school=row["school"], level=row["level"], since=row["movement_date"])
        elif state["instruction"] != "school" or state["school"] == row["school"]:
            kind = row["destination_kind"] or "unknown"
            state.update(instruction=WHERE.get(kind, kind), school=None, since=row["movement_date"])
    if state is not None:
        yield state


def _age(state: dict[str, Any], on: dt.date) -> int | None:
    born: dt.date | None = state["birth_date"]
    if born is not None:
        return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return on.year - state["birth_year"] if state["birth_year"] else None


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _firsts_of_month(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start.replace(day=1)
    if day < start:
        day = _next_month(day)
    while day <= end:
        yield day
        day = _next_month(day)
