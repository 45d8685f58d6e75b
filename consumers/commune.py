"""The commune's view: arrivals and departures of children (mouvements), from its deliveries.

Pure parsing of deliveries; applying is a few idempotent statements keyed by delivery id, so a
delivery seen twice changes nothing. Corrections update and erasures remove what they name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Date, DateTime, Engine, MetaData, String, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..schemas.codec import delivery_codec
from ..schemas.errors import InvalidEvent
from .store import Record

metadata = MetaData()

movements = Table(
    "commune_movements",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("event_ref", String(64), nullable=False, index=True),
    Column("subject", String(64), nullable=True, index=True),
    Column("kind", String(10), nullable=False),  # arrival | departure
    Column("last_name", String(200)),
    Column("first_name", String(200)),
    Column("birth_date", Date),
    Column("residence_commune", String(5)),
    Column("school", String(8)),
    Column("school_commune", String(5)),
    Column("level", String(5)),
    Column("other_school", String(8)),
    Column("other_commune", String(5)),
    Column("destination_kind", String(20)),
    Column("movement_date", Date),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("convention_id", String(100), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Item:
    """One delivery, decoded, as the view needs it."""

    delivery: dict[str, Any]


class CommuneView:
    """Arrivals (enrolments) and departures (transfers) of the children a commune may know of."""

    name = "commune"

    def create(self, engine: Engine) -> None:
        metadata.create_all(engine)

    def parse(self, record: Record) -> Item:
        delivery = delivery_codec().decode(record.value)
        if delivery["event_type"] in ("enrolment", "transfer") and delivery.get("school") is None:
            raise InvalidEvent("school: required for a movement, missing from the delivery")
        return Item(delivery)

    def apply(self, conn: Connection, items: list[Item]) -> None:
        for item in items:
            d = item.delivery
            match d["event_type"]:
                case "enrolment" | "transfer":
                    _insert_once(conn, _movement_row(d))
                case "correction" if d.get("target_ref"):
                    conn.execute(
                        update(movements).where(movements.c.event_ref == d["target_ref"]).values(**_corrected(d))
                    )
                case "erasure":
                    conn.execute(delete(movements).where(_erased(d)))


def _movement_row(d: dict[str, Any]) -> dict[str, Any]:
    arrival = d["event_type"] == "enrolment"
    return {
        "delivery_id": d["delivery_id"],
        "event_ref": d["event_ref"],
        "subject": d["subject"],
        "kind": "arrival" if arrival else "departure",
        "last_name": d.get("last_name"),
        "first_name": d.get("first_name"),
        "birth_date": d.get("birth_date"),
        "residence_commune": d.get("residence_commune"),
        "school": d.get("school"),
        "school_commune": d.get("school_commune"),
        "level": d.get("level"),
        "other_school": d.get("origin_school") if arrival else d.get("destination_school"),
        "other_commune": None if arrival else d.get("destination_commune"),
        "destination_kind": None if arrival else d.get("destination_kind"),
        "movement_date": d.get("entry_date") if arrival else d.get("exit_date"),
        "event_time": d["event_time"],
        "convention_id": d["convention_id"],
    }


def _corrected(d: dict[str, Any]) -> dict[str, Any]:
    names = ("last_name", "first_name", "birth_date", "residence_commune", "school", "school_commune", "level")
    return {name: d[name] for name in names if d.get(name) is not None}


def _erased(d: dict[str, Any]) -> Any:
    if d.get("erasure_scope") == "pupil":
        return movements.c.subject == d["subject"]
    return movements.c.event_ref == d.get("target_ref")


def _insert_once(conn: Connection, row: dict[str, Any]) -> None:
    dialect = {"postgresql": postgresql, "sqlite": sqlite}[conn.dialect.name]
    conn.execute(dialect.insert(movements).values(**row).on_conflict_do_nothing(index_elements=["delivery_id"]))


def recent_movements(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest arrivals and departures, newest first."""
    query = select(movements).order_by(movements.c.event_time.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def movement_counts(conn: Connection) -> dict[str, int]:
    """How many arrivals and departures the view holds."""
    from sqlalchemy import func

    rows = conn.execute(select(movements.c.kind, func.count()).group_by(movements.c.kind))
    return {kind: count for kind, count in rows}
