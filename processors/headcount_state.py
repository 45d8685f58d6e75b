"""One partition's headcounts on disk: a SQLite file per partition of the aggregation topic.

The movements on the aggregation topic are the log of the headcounts; this file holds their fold
(each pupil's movements at a school, each cell's count) and how far into the log it reaches, so
that a worker taking a partition reads only the movements after that point, and holds no more of
the state in memory than one chunk's pupils. Kept in dicts, the state took 792 bytes a counted
pupil (a région's 300,000 lycéens: 329 MB at peak against 66 MB with the file, `scolaflux bench
--only headcounts`; the rentrée's 12.4 million enrolments, each pupil counted under one or two
aggregated conventions: 10 - 20 GB), and a worker taking a partition read it from its beginning.

Movements are folded in transactions (a worker's: one per partition and batch) that also record the
offset after the last movement and that movement's fingerprint (Kafka timestamp and a hash of key
and value): the file is always the fold of a prefix of the log, give or take movements applied
twice, which change nothing. The file runs ahead of the group's committed offset (it is written
before the batch's cells are sent): a worker resuming there applies those movements again, which
changes nothing and republishes every cell they may have changed (``aggregation.apply_movement``),
their first delivery having perhaps been lost. Before resuming, the worker checks that the log still
holds that fingerprint at that offset; a file of another log (the topic deleted and made again,
another deployment's data directory) is emptied and the partition read from its beginning. Several
workers may use the same file one after the other (one data directory on one machine); SQLite
serialises their transactions, each reading the state afresh. Durability is not needed, only
atomicity: a transaction lost in a power cut leaves an older prefix, which the log completes (WAL,
``synchronous=NORMAL``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from .aggregation import CellKey, CellValue, Movement, apply_batch

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS members (key TEXT PRIMARY KEY, entries TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY CHECK (id = 0), next_offset INTEGER NOT NULL, "
    "fingerprint TEXT NOT NULL)",
)
_MEMBERS_AMONG = "SELECT key, entries FROM members WHERE key IN (SELECT value FROM json_each(?))"


class Logged(Protocol):
    """A movement as read from the aggregation topic (an aiokafka ``ConsumerRecord``)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes


def fingerprint(record: Logged) -> str:
    """What tells a movement of the log from another at the same offset of another log."""
    digest = hashlib.blake2b(record.key or b"", digest_size=12)
    digest.update(record.value)
    return f"{record.timestamp}:{digest.hexdigest()}"


class HeadcountState:
    """The headcounts of one partition, in the SQLite file at ``path`` (made if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        for statement in _SCHEMA:
            self.conn.execute(statement)

    @property
    def next_offset(self) -> int:
        """The offset after the last movement folded in (0: none)."""
        row = self.conn.execute("SELECT next_offset FROM log").fetchone()
        return row[0] if row else 0

    def follows(self, record: Logged) -> bool:
        """Whether ``record`` is the last movement folded in (so the file is a fold of this log)."""
        row = self.conn.execute("SELECT next_offset, fingerprint FROM log").fetchone()
        return row is not None and (row[0] - 1, row[1]) == (record.offset, fingerprint(record))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction for several ``fold`` calls (a worker's batch: fewer pages written than a
        transaction per chunk); rolled back if anything in it raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def fold(self, records: Sequence[Logged], changed: dict[CellKey, tuple[Movement, CellValue]]) -> None:
        """Apply the movements of ``records`` (consecutive, in offset order) with the offset they
        reach, in the open transaction or in one of its own; ``changed`` gets the cells whose published
        value changed (see ``aggregation.apply_batch``)."""
        if not records:
            return
        if not self.conn.in_transaction:
            with self.transaction():
                return self.fold(records, changed)
        moves = [Movement.from_bytes(record.value) for record in records]
        members = _Rows(self._reader("SELECT entries FROM members WHERE key = ?", json.loads))
        keys = list({f"{m.convention_id}|{m.school}|{m.pupil}" for m in moves})
        members.update(dict.fromkeys(keys))  # read, not changed: a dict's update bypasses __setitem__
        members.update(
            (key, json.loads(entries)) for key, entries in self.conn.execute(_MEMBERS_AMONG, (json.dumps(keys),))
        )
        counts = _Rows(self._reader("SELECT n FROM counts WHERE key = ?", int))
        apply_batch(members, counts, moves, changed)
        self.conn.executemany(
            "INSERT OR REPLACE INTO members VALUES (?, ?)",
            [(key, json.dumps(members[key], separators=(",", ":"))) for key in members.changed],
        )
        self.conn.executemany("INSERT OR REPLACE INTO counts VALUES (?, ?)", [(k, counts[k]) for k in counts.changed])
        last = records[-1]
        self.conn.execute("INSERT OR REPLACE INTO log VALUES (0, ?, ?)", (last.offset + 1, fingerprint(last)))

    def _reader(self, sql: str, parse: Callable[[Any], Any]) -> Callable[[str], Any]:
        """One row's value by its key (``sql`` selects it), parsed; None when there is no row."""

        def read(key: str) -> Any:
            row = self.conn.execute(sql, (key,)).fetchone()
            return None if row is None else parse(row[0])

        return read

    def counts(self) -> dict[str, int]:
        """Every cell's count (convention|school|level), zeros left out."""
        return dict(self.conn.execute("SELECT key, n FROM counts WHERE n != 0"))

    def clear(self) -> None:
        """Forget everything: the file then holds the fold of no movement."""
        with self.transaction():
            self.conn.execute("DELETE FROM members")
            self.conn.execute("DELETE FROM counts")
            self.conn.execute("DELETE FROM log")

    def close(self) -> None:
        self.conn.close()


class _Rows(dict[str, Any]):
    """The rows of one table a transaction reads, each read once (``read`` on first use; None: no
    row), and the keys it changed."""

    def __init__(self, read: Callable[[str], Any]) -> None:
        super().__init__()
        self.read = read
        self.changed: set[str] = set()

    def get(self, key: str, default: Any = None, /) -> Any:
        if key not in self:
            super().__setitem__(key, self.read(key))
        value = self[key]
        return default if value is None else value

    def __setitem__(self, key: str, value: Any, /) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)
