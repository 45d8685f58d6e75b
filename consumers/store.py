"""The views' database (SQLAlchemy): SQLite by default, PostgreSQL when given a URL.

Every batch of deliveries is applied in one transaction together with the offsets it reaches and
the ids of the deliveries it applied, so a crash at any point (a kill -9 between any two
statements) neither loses nor doubles a delivery: on restart the view resumes from the offsets it
committed with its last change, and a delivery seen twice (a producer retry, a processor replay)
is recognised by its id and changes nothing.

Storage layout: with SQLite, one file per authority (``DATA_DIR/views/view-commune-69123.sqlite``);
with PostgreSQL, one schema per authority in the given database (``<topic_prefix>_commune_69123``).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from itertools import repeat
from operator import is_not, itemgetter
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Insert,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    any_,
    bindparam,
    column,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from ..schemas.errors import RejectedInput
from .authority import Authority

metadata = MetaData()
"""The bookkeeping tables every view has (offsets, applied deliveries, set-aside records)."""

applied_offsets = Table(
    "applied_offsets",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", Integer, nullable=False),
)

applied_deliveries = Table(
    "applied_deliveries",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("convention_id", String(100), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", Integer, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, index=True),
)

rejected_deliveries = Table(
    "rejected_deliveries",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", Integer, primary_key=True),
    Column("category", String(20), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=True),
    Column("rejected_at", DateTime(timezone=True), nullable=False),
)

view_info = Table(
    "view_info",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", String(255), nullable=False),
)

view_counters = Table(
    "view_counters",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", Integer, nullable=False),
)

BOOKKEEPING_TIMES = {"applied_deliveries": ("applied_at",), "rejected_deliveries": ("rejected_at",)}
"""Columns that hold wall-clock times of this run (left out when two runs are compared)."""


class ViewMismatch(RuntimeError):
    """A database that holds another authority's view."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a delivery topic."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None = None
    """The record's Kafka timestamp: when its source event entered the platform (set by the processor)."""


class Parsed(Protocol):
    """What a view's ``parse`` returns: at least the delivery's id and its times."""

    delivery_id: str
    convention_id: str
    event_time: dt.datetime
    recorded_at: dt.datetime
    delivered_at: dt.datetime


class View(Protocol):
    """A view: parses records (pure; raises ``RejectedInput`` to set one aside) and applies them."""

    name: str
    tables: Sequence[Table]

    def create(self, engine: Engine) -> None:
        """Create the view's tables if they do not exist."""

    def parse(self, record: Record) -> Parsed:
        """The item to apply for one record, or raise ``RejectedInput``."""

    def apply(self, conn: Connection, items: list[Any]) -> None:
        """Apply parsed items, in order, inside the open transaction."""


@dataclass
class BatchOutcome:
    """What one batch did: the items applied, duplicates skipped, records set aside."""

    applied: list[Any] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[Record, str, str]] = field(default_factory=list)
    applied_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def view_url(database_url: str | None, data_dir: Path, authority: str) -> str:
    """The database URL of one authority's view: the given URL, or a SQLite file of its own."""
    if database_url:
        return database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / f'view-{authority}.sqlite'}"


def make_engine(url: str, schema: str | None = None) -> Engine:
    """An engine for ``url``; SQLite gets WAL and synchronous=FULL so a commit survives a kill -9.

    With ``schema`` (PostgreSQL), the view's tables live in that schema, created if missing.
    """
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    if engine.dialect.driver == "psycopg":
        _binary_lists(engine)
    if schema and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    metadata.create_all(engine)
    return engine


def _binary_lists(engine: Engine) -> None:
    """psycopg sends list parameters (the bulk inserts' column arrays) in the binary format: its
    text format escaped every element through a regular expression in Python, ~5 µs for a row of
    six values against ~0.8."""

    @event.listens_for(engine, "connect")
    def _binary(dbapi_connection: Any, _record: Any) -> None:
        from psycopg.types.array import ListBinaryDumper

        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


def _sqlite_pragmas(engine: Engine) -> None:
    _bind_nulls_directly()

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself (pysqlite quirk)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _bind_nulls_directly() -> None:
    """SQLite's driver binds None as NULL, but first looks for an adapter of it: finding none, it
    asks the protocol type for ``__adapt__``, which formats an AttributeError message then cleared,
    ~0.2 µs a NULL (a delivery's rows bind ~10). Registered as None's adapter, ``{}.get`` (a C
    callable giving None back) ends the search at once; NULL is bound as before. The registry is
    the driver's, process-wide: any None bound in the process goes this way, to the same NULL."""
    sqlite3.register_adapter(type(None), {}.get)


def open_view_engine(database_url: str | None, data_dir: Path, authority: Authority, schema_prefix: str) -> Engine:
    """The engine of one authority's view: its own SQLite file, or its own schema in PostgreSQL."""
    url = view_url(database_url, data_dir, authority.slug)
    return make_engine(url, authority.schema(schema_prefix))


def claim_view(engine: Engine, authority: Authority | None) -> None:
    """Record which authority the view belongs to; refuse a database holding another one's view."""
    if authority is None:
        return
    with engine.begin() as conn:
        owner = conn.execute(select(view_info.c.value).where(view_info.c.name == "authority")).scalar()
        if owner is None:
            conn.execute(insert(view_info).values(name="authority", value=str(authority)))
        elif owner != str(authority):
            raise ViewMismatch(f"this database holds the view of {owner}, not of {authority}")


def upsert(conn: Connection, table: Table, row: dict[str, Any], keys: Sequence[str], **set_: Any) -> None:
    """Insert ``row``, or on a key conflict update the ``set_`` columns (nothing when empty)."""
    dialect = {"postgresql": postgresql, "sqlite": sqlite}[conn.dialect.name]
    statement = dialect.insert(table).values(**row)
    if set_:
        statement = statement.on_conflict_do_update(index_elements=list(keys), set_=set_)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(statement)


def insert_many(
    conn: Connection, table: Table, rows: list[dict[str, Any]], keys: Sequence[str] = (), replace: bool = False
) -> None:
    """Insert many rows (``executemany``). With ``keys``, a row whose key is already there is left as
    it is, or with ``replace`` replaced by the new one; without, it is an error.

    On SQLite the rows go straight to the driver's ``executemany``, converted as SQLAlchemy's own
    bind processors convert them (so the stored values are the same; ``_converter``): SQLAlchemy's
    per-row parameter handling cost about as much as SQLite's insert itself. On PostgreSQL one
    statement inserts them all, each column sent as one array (``INSERT ... SELECT FROM
    unnest(...)``): an ``executemany`` cost a statement execution on the server and SQLAlchemy's and
    psycopg's handling of every row.
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        if replace:  # one statement cannot update a row twice: the last row of a key wins, as one by one
            rows = list({tuple(row[key] for key in keys): row for row in rows}.values())
        names = tuple(c.name for c in table.c)
        arrays = dict(zip(names, map(list, _columns(rows, names)), strict=True))
        conn.execute(_postgres_bulk_insert(table, tuple(keys), replace), arrays)
        return
    if conn.dialect.name != "sqlite":
        raise ValueError(f"views are kept in SQLite or PostgreSQL, not {conn.dialect.name}")
    sql, names, converters = _sqlite_executemany(_sqlite_insert(table, tuple(keys), replace), conn.dialect)
    columns = _columns(rows, names)
    for index, convert, once in converters:
        columns[index] = _converted(columns[index], convert, once)
    conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> list[Sequence[Any]]:
    """The values of each of ``names`` in the rows, one sequence per name (a missing key gives None):
    picked with ``itemgetter`` and transposed with ``zip``, without a Python loop over the values."""
    if len(names) == 1:
        return [[row.get(names[0]) for row in rows]]
    try:
        picked = list(map(itemgetter(*names), rows))
    except KeyError:
        picked = [tuple(row.get(name) for name in names) for row in rows]
    return list(zip(*picked, strict=True))


@cache
def _sqlite_insert(table: Table, keys: tuple[str, ...], replace: bool) -> Insert:
    """The insert of ``insert_many`` on SQLite, made once (``_sqlite_executemany`` keeps its SQL by statement)."""
    return _on_conflict(sqlite.insert(table), keys, replace)


def _on_conflict(statement: Any, keys: tuple[str, ...], replace: bool) -> Any:
    """``statement`` (a SQLite or PostgreSQL insert) where a row whose ``keys`` are already there is
    left as it is, or with ``replace`` replaced by the new one; without keys, an error."""
    if not keys:
        return statement
    if not replace:
        return statement.on_conflict_do_nothing(index_elements=list(keys))
    others = {c.name: statement.excluded[c.name] for c in statement.table.c if c.name not in keys}
    return statement.on_conflict_do_update(index_elements=list(keys), set_=others)


@cache
def _postgres_bulk_insert(table: Table, keys: tuple[str, ...], replace: bool) -> Insert:
    """``INSERT INTO table SELECT * FROM unnest(:column1, :column2, ...)``, each parameter an array of
    the column's values, with the conflict handling of ``_on_conflict``. Arrays of strings
    are ``VARCHAR[]`` without a length: a too long value still fails the insert (a cast to
    ``VARCHAR(n)`` would cut it)."""
    names = [c.name for c in table.c]
    arrays = [bindparam(c.name, type_=ARRAY(String() if isinstance(c.type, String) else c.type)) for c in table.c]
    unnested = func.unnest(*arrays).table_valued(*names).render_derived(name="rows")
    statement = postgresql.insert(table).from_select(names, select(*(unnested.c[name] for name in names)))
    return _on_conflict(statement, keys, replace)


@cache
def _sqlite_executemany(statement: Insert, dialect: Dialect) -> tuple[str, tuple[str, ...], tuple[Converter, ...]]:
    """The SQL of ``statement`` for SQLite's driver, its parameters' names in order, and by position
    the converter of each parameter that has one, with whether it may convert each distinct value
    once (``_converter``)."""
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.binds[name].key for name in compiled.positiontup or ())
    column = statement.table.c
    converters = ((index, _converter(column[name].type, dialect)) for index, name in enumerate(names))
    return compiled.string, names, tuple((index, *c) for index, c in converters if c is not None)


Converter = tuple[int, Callable[[Any], Any], bool]


def _converted(values: Sequence[Any], convert: Callable[[Any], Any], once: bool) -> list[Any]:
    """A column's values converted (None stays None). With ``once``, each distinct value is converted
    once, when the values have one time zone at most: equal times in two zones are one value for
    Python but two wall clocks, two texts. A batch's rows share many dates and times (its one
    ``applied_at``, a rentrée's entry date, event and delivery times)."""
    if once:
        present = list(filter(partial(is_not, None), values))
        if len(set(map(getattr, present, repeat("tzinfo"), repeat(None)))) <= 1:
            texts = {value: convert(value) for value in set(present)}
            texts[None] = None
            return list(map(texts.__getitem__, values))
    return [None if value is None else convert(value) for value in values]


def _converter(type_: Any, dialect: Dialect) -> tuple[Callable[[Any], Any], bool] | None:
    """SQLAlchemy's converter of a column's values for SQLite's driver (None when it has none), and
    whether it may convert each distinct value once (dates, times, booleans). For DATETIME and DATE,
    one that makes the text through ``isoformat`` (2 - 3x faster), kept only if it gives SQLAlchemy's
    text for sample values (aware, naive, at the ends of the calendar): a storage format other than
    the default keeps SQLAlchemy's."""
    impl = type_.dialect_impl(dialect)
    convert = impl.bind_processor(dialect)
    if convert is None:
        return None
    if isinstance(impl, sqlite.DATETIME):

        def iso(value: Any) -> Any:
            return value.isoformat(" ", "microseconds")[:26] if type(value) is dt.datetime else convert(value)

    elif isinstance(impl, sqlite.DATE):

        def iso(value: Any) -> Any:
            return value.isoformat() if type(value) is dt.date else convert(value)

    else:
        return convert, isinstance(impl, Boolean)
    return (iso if all(iso(value) == convert(value) for value in _SAMPLE_TIMES) else convert), True


_SAMPLE_TIMES = (
    dt.datetime(2026, 9, 1, 8, 30, 5, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 9, 1, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-5, seconds=30))),
    dt.date(2026, 9, 1),
    dt.date(1, 1, 1),
    dt.date(9999, 12, 31),
)


def load_offsets(engine: Engine, topic: str) -> dict[int, int]:
    """The next offset to read per partition, as committed with the view."""
    with engine.connect() as conn:
        rows = conn.execute(select(applied_offsets).where(applied_offsets.c.topic == topic))
        return {row.partition: row.next_offset for row in rows}


def apply_batch(engine: Engine, records: Iterable[Record], view: View) -> BatchOutcome:
    """Apply records, their ids and the offsets they reach in one transaction.

    Records the view cannot parse are set aside with their reason (the offset still advances);
    deliveries already applied, earlier or in this batch, are skipped.
    """
    outcome = BatchOutcome()
    parsed: list[tuple[Record, Any]] = []
    reached: dict[tuple[str, int], int] = {}
    for record in records:
        try:
            parsed.append((record, view.parse(record)))
        except RejectedInput as error:
            outcome.rejected.append((record, error.reason, str(error)))
        reached[(record.topic, record.partition)] = record.offset + 1
    with engine.begin() as conn:
        fresh = _first_sightings(conn, parsed)
        outcome.duplicates = len(parsed) - len(fresh)
        outcome.applied = [item for _, item in fresh]
        if fresh:
            view.apply(conn, outcome.applied)
            _remember(conn, fresh, outcome.applied_at)
        for record, category, reason in outcome.rejected:
            _set_aside(conn, record, category, reason, outcome.applied_at)
        if outcome.rejected:
            add_to_counter(conn, "rejected", len(outcome.rejected))
        _save_offsets(conn, reached)
    return outcome


def _first_sightings(conn: Connection, parsed: list[tuple[Record, Any]]) -> list[tuple[Record, Any]]:
    ids = list({item.delivery_id for _, item in parsed})
    seen: set[str] = set()
    if ids and conn.dialect.name == "postgresql":  # one statement: the ids as an array
        seen.update(conn.execute(_applied_among(), {"ids": ids}).scalars())
    elif ids:  # SQLite, one statement: the ids as a JSON list
        seen.update(conn.execute(_applied_in_json(), {"ids": json.dumps(ids)}).scalars())
    fresh = []
    for record, item in parsed:
        if item.delivery_id not in seen:
            seen.add(item.delivery_id)
            fresh.append((record, item))
    return fresh


@cache
def _applied_among() -> Select[Any]:
    """The applied delivery ids among the array parameter ``ids`` (PostgreSQL)."""
    ids = bindparam("ids", type_=ARRAY(String()))
    return select(applied_deliveries.c.delivery_id).where(applied_deliveries.c.delivery_id == any_(ids))


@cache
def _applied_in_json() -> Select[Any]:
    """The applied delivery ids among the JSON list ``ids`` (SQLite, ``json_each``)."""
    ids = text("SELECT value FROM json_each(:ids)").columns(column("value", String))
    return select(applied_deliveries.c.delivery_id).where(applied_deliveries.c.delivery_id.in_(ids))


def _remember(conn: Connection, applied: list[tuple[Record, Any]], applied_at: dt.datetime) -> None:
    insert_many(
        conn,
        applied_deliveries,
        [
            {
                "delivery_id": item.delivery_id,
                "convention_id": item.convention_id,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "event_time": item.event_time,
                "recorded_at": item.recorded_at,
                "delivered_at": item.delivered_at,
                "applied_at": applied_at,
            }
            for record, item in applied
        ],
    )


def _set_aside(conn: Connection, record: Record, category: str, reason: str, now: dt.datetime) -> None:
    headers = {k: v.decode(errors="replace") for k, v in record.headers}
    row = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "category": category,
        "reason": reason[:500],
        "raw": record.value,
        "headers": headers,
        "rejected_at": now,
    }
    upsert(conn, rejected_deliveries, row, ("topic", "partition", "offset"))


def _save_offsets(conn: Connection, reached: dict[tuple[str, int], int]) -> None:
    for (topic, partition), next_offset in reached.items():
        upsert(
            conn,
            applied_offsets,
            {"topic": topic, "partition": partition, "next_offset": next_offset},
            ("topic", "partition"),
            next_offset=next_offset,
        )


def add_to_counter(conn: Connection, name: str, amount: int) -> None:
    """Add ``amount`` to a named counter of the view (e.g. rows deleted by retention)."""
    updated = conn.execute(
        update(view_counters).where(view_counters.c.name == name).values(value=view_counters.c.value + amount)
    )
    if updated.rowcount == 0:
        conn.execute(insert(view_counters).values(name=name, value=amount))


def counters(conn: Connection) -> dict[str, int]:
    """The view's counters: ``rejected`` (records set aside), ``retention_deleted`` (rows expired)."""
    return {row.name: row.value for row in conn.execute(select(view_counters))}


def freshness(conn: Connection) -> dict[str, Any]:
    """When the view last applied a delivery, and the newest event time it holds."""
    row = conn.execute(
        select(
            func.max(applied_deliveries.c.applied_at),
            func.max(applied_deliveries.c.event_time),
            func.count(),
        )
    ).one()
    return {"last_applied_at": row[0], "newest_event_time": row[1], "deliveries_applied": row[2]}


def rejected(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """The records set aside, newest first, without their raw bytes."""
    columns = [c for c in rejected_deliveries.c if c.name != "raw"]
    query = select(*columns).order_by(rejected_deliveries.c.rejected_at.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def reset_view(engine: Engine, view: View) -> None:
    """Drop every table of the view and its bookkeeping, then create them empty (for a rebuild)."""
    with engine.begin() as conn:
        for table in [*view.tables, applied_offsets, applied_deliveries, rejected_deliveries, view_counters]:
            conn.execute(delete(table))  # view_info is kept: the view still belongs to the same authority


def snapshot(engine: Engine, tables: Sequence[Table]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables`` (wall-clock bookkeeping columns left out), sorted: to compare two runs."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in tables:
            skip = BOOKKEEPING_TIMES.get(table.name, ())
            columns = [c for c in table.c if c.name not in skip]
            rows = conn.execute(select(*columns)).all()
            dump[table.name] = sorted((tuple(_plain(v) for v in row) for row in rows), key=repr)
    return dump


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


BOOKKEEPING_TABLES = (applied_offsets, applied_deliveries, rejected_deliveries, view_counters)
