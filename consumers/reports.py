"""The readable sections of each authority's view: one place for the CLI, the CSV export, the HTTP
API and the web page, so they all show the same thing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from ..schemas.models import COLLEGE_LEVELS, LEVELS, LYCEE_LEVELS
from . import commune, departement, region
from .authority import Authority, Level
from .ledger import movements
from .store import counters, freshness

SECTIONS: dict[Level, tuple[str, ...]] = {
    "commune": ("movements", "mutations", "instruction-list", "monthly-lists", "absenteeism", "lost-pupils"),
    "departement": ("headcounts", "movements-per-school", "origins", "movements", "aggregates"),
    "region": ("headcounts", "changes", "projections", "ratios", "aggregates"),
}
"""The sections each level of authority can read, the first being the default export."""


@dataclass(frozen=True)
class ReadOptions:
    """How to read a view: as of which date, the lost-pupil delay, a school year, a month."""

    as_of: dt.date = field(default_factory=dt.date.today)
    lost_pupil_days: int = 30
    school_year: int | None = None
    month: str | None = None
    school_names: Callable[[str], str | None] | None = None


@dataclass
class Section:
    """A table of the view: its rows, the columns to show, and a note saying what it rests on."""

    name: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[str]
    note: str = ""


def section(conn: Connection, authority: Authority, name: str, options: ReadOptions) -> Section:
    """One section of the view of ``authority``; ``KeyError`` for a section its level does not have."""
    if name not in SECTIONS[authority.level]:
        raise KeyError(name)
    title, rows, note = _build(conn, authority, name, options)
    if options.school_names:
        rows = [_with_school_name(row, options.school_names) for row in rows]
    columns = list(rows[0]) if rows else []
    return Section(name, title, rows, columns, note)


def _build(conn: Connection, authority: Authority, name: str, o: ReadOptions) -> tuple[str, list[dict[str, Any]], str]:
    code = authority.code if authority.level == "commune" else None
    match name:
        case "movements":
            return "Arrivals and departures (mouvements)", commune.movement_list(conn, o.month), ""
        case "mutations":
            return "État des mutations, by month and school", commune.mutations_by_month(conn), ""
        case "instruction-list":
            rows = commune.instruction_list(conn, code, o.as_of)
            return f"Compulsory-instruction list on {o.as_of.isoformat()}", rows, "resident children aged 3 to 16"
        case "monthly-lists":
            return "The list on the 1st of each month, and now", commune.monthly_lists(conn, code, o.as_of), ""
        case "absenteeism":
            note = f"{commune.ABSENTEEISM_THRESHOLD}+ unjustified half-days in a calendar month (L131-8)"
            return "Absenteeism warnings", commune.absenteeism_warnings(conn), note
        case "lost-pupils":
            note = f"no known destination, not enrolled again; alert after {o.lost_pupil_days} days"
            return (
                "Children who left with no known destination",
                commune.lost_pupils(conn, o.as_of, o.lost_pupil_days),
                note,
            )
        case "headcounts":
            by_track = authority.level == "region"
            rows = departement.headcounts(conn, o.school_year, by_track=by_track)
            return "Headcounts by school, level" + (" and track" if by_track else ""), rows, "live"
        case "movements-per-school":
            return "Arrivals and departures per school", departement.movements_per_school(conn, o.school_year), ""
        case "origins":
            return "Where pupils come from (commune of residence)", departement.origins(conn, o.school_year), ""
        case "aggregates":
            note = "as delivered by aggregated conventions; suppressed cells have no count"
            return "Aggregated headcounts", departement.aggregates(conn), note
        case "changes":
            return "Enrolment changes, newest first", region.enrolment_changes(conn, limit=500), ""
        case "projections" | "ratios":
            projection = region.projections(conn, levels=_progression_levels(authority))
            if name == "ratios":
                rows = [
                    {
                        "school": r.school,
                        "from_level": r.from_level,
                        "to_level": r.to_level,
                        "ratio": None if r.value is None else round(r.value, 4),
                        "basis": r.basis,
                    }
                    for r in projection.ratios
                ]
                return "Grade-progression ratios", rows, projection.basis
            return "Projected headcounts (next 3 school years)", projection.rows, projection.basis
    raise KeyError(name)


def _progression_levels(authority: Authority) -> tuple[str, ...]:
    return COLLEGE_LEVELS if authority.level == "departement" else LYCEE_LEVELS


def _with_school_name(row: dict[str, Any], names: Callable[[str], str | None]) -> dict[str, Any]:
    if not row.get("school"):
        return row
    out: dict[str, Any] = {}
    for key, value in row.items():
        out[key] = value
        if key == "school":
            out["school_name"] = names(value)
    return out


def summary(conn: Connection, authority: Authority, options: ReadOptions) -> dict[str, Any]:
    """The key figures of a view and a chart's data: what the web page shows and refreshes."""
    kinds = dict(conn.execute(select(movements.c.kind, func.count()).group_by(movements.c.kind)).all())
    figures: dict[str, Any] = {"arrivals": kinds.get("arrival", 0), "departures": kinds.get("departure", 0)}
    if authority.level == "commune":
        children = commune.instruction_list(conn, authority.code, options.as_of)
        lost = commune.lost_pupils(conn, options.as_of, options.lost_pupil_days)
        figures["children_on_list"] = len(children)
        figures["lost_pupil_alerts"] = sum(1 for row in lost if row["status"] == "alert")
        figures["absenteeism_warnings"] = len(commune.absenteeism_warnings(conn))
        chart = _by_level((child["level"] for child in children if child["level"]), "children enrolled, by level")
    else:
        rows = departement.headcounts(conn, options.school_year)
        figures["pupils"] = sum(row["pupils"] for row in rows)
        totals: dict[str, int] = {}
        for row in rows:
            totals[row["level"]] = totals.get(row["level"], 0) + row["pupils"]
        chart = {"title": "pupils enrolled now, by level", "bars": _ordered(totals)}
    fresh = freshness(conn)
    return {
        "authority": str(authority),
        "as_of": options.as_of.isoformat(),
        "figures": figures,
        "chart": chart,
        "counters": counters(conn),
        "deliveries_applied": fresh["deliveries_applied"],
        "last_applied_at": fresh["last_applied_at"].isoformat() if fresh["last_applied_at"] else None,
        "sections": list(SECTIONS[authority.level]),
    }


def _by_level(levels: Any, title: str) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for level in levels:
        totals[level] = totals.get(level, 0) + 1
    return {"title": title, "bars": _ordered(totals)}


def _ordered(totals: dict[str, int]) -> list[dict[str, Any]]:
    def rank(level: str) -> int:
        return LEVELS.index(level) if level in LEVELS else len(LEVELS)

    return [{"label": level, "value": totals[level]} for level in sorted(totals, key=rank)]
