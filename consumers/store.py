"""The views' database (SQLAlchemy): SQLite by default, PostgreSQL when given a URL.

Every batch of deliveries is applied in one transaction together with the offsets it reaches, so
a crash at any point neither loses nor doubles a delivery: on restart the view resumes from the
offsets it committed with its last change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
)

from ..schemas.errors import RejectedInput

metadata = MetaData()

applied_offsets = Table(
    "applied_offsets",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", Integer, nullable=False),
)

rejected_deliveries = Table(
    "rejected_deliveries",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", Integer, primary_key=True),
    Column("reason", String(500), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=True),
)


def view_url(database_url: str | None, data_dir: Path, authority: str) -> str:
    """The database URL of one authority's view: the given URL, or a SQLite file of its own."""
    if database_url:
        return database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / f'view-{authority}.sqlite'}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and synchronous=FULL so a commit survives a kill -9."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()
            dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself (pysqlite quirk)

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    metadata.create_all(engine)
    return engine


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a delivery topic."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: list[tuple[str, bytes]]


class View(Protocol):
    """A view: parses records (pure; raises ``RejectedInput`` to set one aside) and applies them."""

    name: str

    def create(self, engine: Engine) -> None:
        """Create the view's tables if they do not exist."""

    def parse(self, record: Record) -> Any:
        """The item to apply for one record, or raise ``RejectedInput``."""

    def apply(self, conn: Connection, items: list[Any]) -> None:
        """Apply parsed items, in order, inside the open transaction; applying one twice changes nothing."""


def load_offsets(engine: Engine, topic: str) -> dict[int, int]:
    """The next offset to read per partition, as committed with the view."""
    with engine.connect() as conn:
        rows = conn.execute(select(applied_offsets).where(applied_offsets.c.topic == topic))
        return {row.partition: row.next_offset for row in rows}


def apply_batch(engine: Engine, records: Iterable[Record], view: View) -> tuple[int, int]:
    """Apply records and the offsets they reach in one transaction; returns (applied, set aside)."""
    items: list[Any] = []
    rejects: list[tuple[Record, str]] = []
    reached: dict[tuple[str, int], int] = {}
    for record in records:
        try:
            items.append(view.parse(record))
        except RejectedInput as error:
            rejects.append((record, str(error)))
        reached[(record.topic, record.partition)] = record.offset + 1
    with engine.begin() as conn:
        if items:
            view.apply(conn, items)
        for record, reason in rejects:
            _set_aside(conn, record, reason)
        _save_offsets(conn, reached)
    return len(items), len(rejects)


def _set_aside(conn: Connection, record: Record, reason: str) -> None:
    headers = {k: v.decode(errors="replace") for k, v in record.headers}
    conn.execute(
        insert(rejected_deliveries).values(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason[:500],
            raw=record.value,
            headers=headers,
        )
    )


def _save_offsets(conn: Connection, reached: dict[tuple[str, int], int]) -> None:
    for (topic, partition), next_offset in reached.items():
        updated = conn.execute(
            applied_offsets.update()
            .where(applied_offsets.c.topic == topic, applied_offsets.c.partition == partition)
            .values(next_offset=next_offset)
        )
        if updated.rowcount == 0:
            conn.execute(insert(applied_offsets).values(topic=topic, partition=partition, next_offset=next_offset))
