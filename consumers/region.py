"""What a région reads from its view: lycée headcounts by school, level and track, live; the stream
of enrolment changes; projections of headcounts for the next school years."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select

from ..schemas.models import LYCEE_LEVELS
from .departement import history
from .ledger import movements
from .projections import Projection, project

CHANGE_COLUMNS = (
    "event_time",
    "kind",
    "school",
    "level",
    "track",
    "movement_date",
    "other_school",
    "destination_kind",
    "residence_commune",
    "subject",
)


def enrolment_changes(
    conn: Connection, since: dt.datetime | None = None, limit: int | None = 200
) -> list[dict[str, Any]]:
    """Enrolments and departures, newest first (``since``: only those with a later event time)."""
    query = select(*(movements.c[name] for name in CHANGE_COLUMNS)).order_by(
        movements.c.event_time.desc(), movements.c.delivery_id
    )
    if since is not None:
        query = query.where(movements.c.event_time > since)
    if limit:
        query = query.limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def projections(conn: Connection, horizon: int = 3, levels: tuple[str, ...] = LYCEE_LEVELS) -> Projection:
    """Headcounts by school and level for the next ``horizon`` school years (grade-progression ratios)."""
    return project(history(conn), levels, horizon)
