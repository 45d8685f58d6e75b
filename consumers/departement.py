"""What a département reads from its view (Code de l'éducation L213-1: collèges, sectorisation).

Collège headcounts by school and level, live; arrivals and departures per collège; where pupils
come from (commune of residence) per collège. Aggregated deliveries are shown as delivered.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from ..schemas.models import LEVELS
from .ledger import aggregate_cells, movements, pupil_years


def current_year(conn: Connection) -> int | None:
    """The latest school year the view holds (the one "live" headcounts are of)."""
    return conn.execute(select(func.max(pupil_years.c.school_year))).scalar()


def headcounts(conn: Connection, school_year: int | None = None, by_track: bool = False) -> list[dict[str, Any]]:
    """Pupils enrolled now, by school and level (and track): the live *effectifs*."""
    year = school_year or current_year(conn)
    keys = [pupil_years.c.school, pupil_years.c.level] + ([pupil_years.c.track] if by_track else [])
    query = (
        select(*keys, func.count().label("pupils"))
        .where(pupil_years.c.school_year == year, pupil_years.c.enrolled.is_(True))
        .group_by(*keys)
    )
    rows = [{"school_year": year, **dict(row._mapping)} for row in conn.execute(query)]
    return sorted(rows, key=lambda r: (r["school"] or "", _level_rank(r["level"]), r.get("track") or ""))


def history(conn: Connection) -> dict[tuple[str, str, int], int]:
    """Headcount by (school, level, school year) as each year ended in the view: the projections' input."""
    query = (
        select(pupil_years.c.school, pupil_years.c.level, pupil_years.c.school_year, func.count())
        .where(pupil_years.c.enrolled.is_(True), pupil_years.c.school.is_not(None), pupil_years.c.level.is_not(None))
        .group_by(pupil_years.c.school, pupil_years.c.level, pupil_years.c.school_year)
    )
    return {(school, level, year): count for school, level, year, count in conn.execute(query)}


def movements_per_school(conn: Connection, school_year: int | None = None) -> list[dict[str, Any]]:
    """Arrivals and departures per school in a school year (the current one by default)."""
    year = school_year or current_year(conn)
    query = (
        select(movements.c.school, movements.c.kind, func.count())
        .where(movements.c.school_year == year)
        .group_by(movements.c.school, movements.c.kind)
    )
    table: dict[str, dict[str, Any]] = {}
    for school, kind, count in conn.execute(query):
        row = table.setdefault(school, {"school_year": year, "school": school, "arrivals": 0, "departures": 0})
        row["arrivals" if kind == "arrival" else "departures"] += count
    return [table[school] for school in sorted(table)]


def origins(conn: Connection, school_year: int | None = None) -> list[dict[str, Any]]:
    """Pupils enrolled now per school and commune of residence: where each collège draws from."""
    year = school_year or current_year(conn)
    keys = (pupil_years.c.school, pupil_years.c.residence_commune)
    query = (
        select(*keys, func.count().label("pupils"))
        .where(pupil_years.c.school_year == year, pupil_years.c.enrolled.is_(True))
        .group_by(*keys)
    )
    rows = [dict(row._mapping) for row in conn.execute(query)]
    return sorted(rows, key=lambda r: (r["school"] or "", -r["pupils"], r["residence_commune"] or ""))


def aggregates(conn: Connection) -> list[dict[str, Any]]:
    """Cells of aggregated conventions as delivered (a suppressed cell has no count)."""
    query = select(
        aggregate_cells.c.school, aggregate_cells.c.level, aggregate_cells.c.count, aggregate_cells.c.suppressed
    ).order_by(aggregate_cells.c.school, aggregate_cells.c.level)
    rows = [dict(row._mapping) for row in conn.execute(query)]
    return sorted(rows, key=lambda r: (r["school"], _level_rank(r["level"])))


def _level_rank(level: str | None) -> int:
    return LEVELS.index(level) if level in LEVELS else len(LEVELS)
