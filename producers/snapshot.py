"""Snapshot-diff import: two successive exports of a source system in, the events that explain
the difference out (import par différence de deux extractions).

Many sources can only export files. Given the previous and the current export, the importer emits:

- an **enrolment** for a pupil who appears (or whose entry date changed: a re-enrolment, e.g.
  the next school year);
- a **transfer** (radiation) then an **enrolment** for a pupil who is now in another school, the
  first naming the new school as destination, the second the old one as origin;
- a **transfer** with an unknown destination for a pupil who disappeared, dated ``as_of``;
- a **correction** naming the changed fields for a pupil whose other data changed.

The file layout (close to a SIECLE / ONDE pupil extract), ``;`` separated, UTF-8 with or without
BOM, one header line with these column names, in any order (extra columns are ignored)::

    INE;NOM;PRENOM;SEXE;DATE_NAISSANCE;COMMUNE_RESIDENCE;UAI;NIVEAU;FILIERE;DATE_ENTREE

- ``INE``: identifiant national élève (RNIE, BEA or apprentice format);
- ``NOM``, ``PRENOM``: names (may be empty); ``SEXE``: ``F``/``M`` (or ``2``/``1``, INSEE order);
- ``DATE_NAISSANCE``, ``DATE_ENTREE``: ``dd/mm/yyyy`` (as SIECLE writes them) or ``yyyy-mm-dd``;
- ``COMMUNE_RESIDENCE``: INSEE code; ``UAI``: the school; ``NIVEAU``: PS..CM2, 6e..3e, 2nde, 1re,
  Tle, or a collège MEF code (``10010012110`` = 6e ...); ``FILIERE``: GT, PRO, CAP or empty.

A row that breaks a rule is rejected with its line number and the rule (never its values) and
written to the rejects file; the good rows go on. A second row with the same INE is rejected.

Large files stream in bounded memory: each file is cut into sorted runs of ``chunk_rows`` rows on
disk (external sort by INE), then the runs are merged and the two files joined pupil by pupil.

Event ids are uuid5 of the content of the change (type, INE, schools, entry date, changed values),
so importing the same pair twice gives the same events with the same ids: every consumer of the
raw topic drops an id it has seen. On top of that, the importer keeps a ledger of the pairs it has
fully imported (by the SHA-256 of both files) and does not send a finished pair again.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import heapq
import io
import itertools
import json
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..schemas.errors import InvalidEvent
from ..schemas.geography import Geography, uai_prefix
from ..schemas.identifiers import normalise_commune, normalise_ine, normalise_uai
from ..schemas.models import LEVELS, Event
from ..schemas.validation import validate_event

COLUMNS = (
    "INE", "NOM", "PRENOM", "SEXE", "DATE_NAISSANCE", "COMMUNE_RESIDENCE", "UAI", "NIVEAU", "FILIERE", "DATE_ENTREE",
)  # fmt: skip
MEF_LEVELS = {"10010012110": "6e", "10110001110": "5e", "10210001110": "4e", "10310019110": "3e"}
SEXES = {"F": "F", "M": "M", "2": "F", "1": "M"}
TRACKS = ("GT", "PRO", "CAP")
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://scolaflux/snapshot-import")
COMPARED = ("last_name", "first_name", "sex", "birth_date", "residence_commune", "level", "track")
"""Fields whose change (same school, same entry date) is a correction."""


class SnapshotRow(NamedTuple):
    """One pupil of an export, normalised. ``line`` is its line number in the file."""

    ine: str
    last_name: str
    first_name: str
    sex: str
    birth_date: dt.date
    residence_commune: str
    uai: str
    level: str
    track: str
    entry_date: dt.date
    line: int

    def value(self, name: str) -> Any:
        """A compared field by its event name."""
        return getattr(self, name)


UNREADABLE = "?"
"""The level of a placeholder row: the pupil is in the file, but its row was rejected."""


def unreadable(ine: str, line: int) -> SnapshotRow:
    """A placeholder for a rejected row whose INE is readable: the pupil is there, nothing else is
    known, so the diff says nothing about it (rather than a false departure or arrival)."""
    epoch = dt.date(1970, 1, 1)
    return SnapshotRow(ine, "", "", "", epoch, "", "", UNREADABLE, "", epoch, line)


class RowError(ValueError):
    """A row that breaks a rule of the layout; the message names the column and the rule."""


@dataclass(frozen=True)
class Rejected:
    """A rejected row: which file, which line, why (no values), and the raw text."""

    file: str
    line: int
    reason: str
    raw: str


@dataclass
class ImportReport:
    """What an import did."""

    rows: dict[str, int] = field(default_factory=lambda: {"previous": 0, "current": 0})
    """Valid rows read, per file."""
    rejected: dict[str, int] = field(default_factory=lambda: {"previous": 0, "current": 0})
    events: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    already_imported: bool = False
    rejects_file: Path | None = None


# --------------------------------------------------------------------------- parsing rows


def parse_date(text: str, column: str) -> dt.date:
    """A date written ``dd/mm/yyyy`` or ``yyyy-mm-dd``."""
    text = text.strip()
    try:
        if "/" in text:
            day, month, year = text.split("/")
            return dt.date(int(year), int(month), int(day))
        return dt.date.fromisoformat(text)
    except ValueError:
        raise RowError(f"{column}: must be a date written dd/mm/yyyy or yyyy-mm-dd") from None


def parse_level(text: str) -> str:
    """A level code, or the level of a collège MEF code."""
    text = text.strip()
    level = MEF_LEVELS.get(text, text)
    if level not in LEVELS:
        raise RowError(f"NIVEAU: must be one of {', '.join(LEVELS)} or a collège MEF code")
    return level


def parse_row(values: dict[str, str], line: int) -> SnapshotRow:
    """Normalise one row of the layout or raise ``RowError`` naming the column and the rule."""

    def rule(column: str, check: Callable[[str], str]) -> str:
        try:
            return check(values[column])
        except ValueError:
            raise RowError(f"{column}: {_rule_of(column)}") from None

    sex = SEXES.get(values["SEXE"].strip().upper())
    if sex is None:
        raise RowError("SEXE: must be F or M (or 2 or 1)")
    track = values["FILIERE"].strip().upper()
    if track and track not in TRACKS:
        raise RowError(f"FILIERE: must be empty or one of {', '.join(TRACKS)}")
    return SnapshotRow(
        ine=rule("INE", normalise_ine),
        last_name=values["NOM"].strip(),
        first_name=values["PRENOM"].strip(),
        sex=sex,
        birth_date=parse_date(values["DATE_NAISSANCE"], "DATE_NAISSANCE"),
        residence_commune=rule("COMMUNE_RESIDENCE", normalise_commune),
        uai=rule("UAI", normalise_uai),
        level=parse_level(values["NIVEAU"]),
        track=track,
        entry_date=parse_date(values["DATE_ENTREE"], "DATE_ENTREE"),
        line=line,
    )


def _rule_of(column: str) -> str:
    """The rule of an identifier column, said without the value (it may identify a pupil)."""
    return {
        "INE": "must be 11 characters in the RNIE, BEA or apprentice format",
        "COMMUNE_RESIDENCE": "must be an INSEE commune code of 5 characters (2A/2B for Corsica)",
        "UAI": "must be 7 digits and the right check letter",
    }[column]


class ProgressSink(Protocol):
    """Told how far the import has gone (bytes read, events sent)."""

    def __call__(self, phase: str, done: int, total: int | None) -> None: ...


def check_layout(path: Path) -> None:
    """Raise ``RowError`` naming the missing columns if ``path`` does not follow the layout."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        _check_header(path, next(csv.reader(file, delimiter=";"), []))


def _check_header(path: Path, header: list[str]) -> list[str]:
    header = [h.strip().upper() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise RowError(f"{path}: line 1: missing column(s) {', '.join(missing)} (expected {';'.join(COLUMNS)})")
    return header


def read_rows(
    path: Path, name: str, rejects: Callable[[Rejected], None], progress: ProgressSink | None = None
) -> Iterator[SnapshotRow]:
    """The valid rows of an export, in file order; bad rows go to ``rejects``."""
    total = path.stat().st_size
    with path.open("rb") as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=";")
        header = _check_header(path, next(reader, []))
        for values in reader:
            if progress is not None and reader.line_num % 20_000 == 0:
                progress(name, binary.tell(), total)
            if not values or values == [""]:
                continue
            line = reader.line_num
            if len(values) != len(header):
                rejects(Rejected(name, line, f"{len(values)} fields, the header has {len(header)}", ";".join(values)))
                continue
            fields = dict(zip(header, values, strict=True))
            try:
                yield parse_row(fields, line)
            except RowError as error:
                rejects(Rejected(name, line, str(error), ";".join(values)))
                with contextlib.suppress(ValueError):
                    yield unreadable(normalise_ine(fields["INE"]), line)
        if progress is not None:
            progress(name, total, total)


# --------------------------------------------------------------------------- external sort


def _dump(row: SnapshotRow) -> list[str]:
    return [*(str(v) for v in row[:-1]), str(row.line)]


def _load(values: list[str]) -> SnapshotRow:
    ine, last, first, sex, birth, commune, uai, level, track, entry, line = values
    return SnapshotRow(
        ine, last, first, sex, dt.date.fromisoformat(birth), commune, uai, level, track,
        dt.date.fromisoformat(entry), int(line),
    )  # fmt: skip


def sorted_rows(rows: Iterable[SnapshotRow], workdir: Path, chunk_rows: int) -> Iterator[SnapshotRow]:
    """Rows sorted by INE (then line), in bounded memory: sorted runs on disk, merged lazily."""
    runs = _write_runs(rows, workdir, chunk_rows)
    with contextlib.ExitStack() as stack:
        readers = [_read_run(stack.enter_context(run.open(encoding="utf-8", newline=""))) for run in runs]
        yield from heapq.merge(*readers, key=lambda r: (r.ine, r.line))


def _write_runs(rows: Iterable[SnapshotRow], workdir: Path, chunk_rows: int) -> list[Path]:
    """Cut rows into sorted runs of ``chunk_rows`` on disk (one chunk in memory at a time)."""
    runs: list[Path] = []
    for number, chunk in enumerate(_batched(rows, chunk_rows)):
        chunk.sort(key=lambda r: (r.ine, r.line))
        run = workdir / f"run-{number}.csv"
        with run.open("w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerows(_dump(r) for r in chunk)
        runs.append(run)
    return runs


def _read_run(file: io.TextIOBase) -> Iterator[SnapshotRow]:
    for values in csv.reader(file):
        yield _load(values)


def _batched(rows: Iterable[SnapshotRow], size: int) -> Iterator[list[SnapshotRow]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def unique_pupils(rows: Iterable[SnapshotRow], name: str, rejects: Callable[[Rejected], None]) -> Iterator[SnapshotRow]:
    """Sorted rows with one row per INE: a later row with the same INE is rejected."""
    previous: SnapshotRow | None = None
    for row in rows:
        if previous is not None and row.ine == previous.ine:
            reason = f"INE: appears again (first at line {previous.line})"
            rejects(Rejected(name, row.line, reason, ";".join(_dump(row))))
            continue
        previous = row
        yield row


def join_by_pupil(
    previous: Iterator[SnapshotRow], current: Iterator[SnapshotRow]
) -> Iterator[tuple[SnapshotRow | None, SnapshotRow | None]]:
    """Merge-join two INE-sorted streams: (before, after) per pupil, None where absent."""
    before, after = next(previous, None), next(current, None)
    while before is not None or after is not None:
        if after is None or (before is not None and before.ine < after.ine):
            yield before, None
            before = next(previous, None)
        elif before is None or after.ine < before.ine:
            yield None, after
            after = next(current, None)
        else:
            yield before, after
            before, after = next(previous, None), next(current, None)


# --------------------------------------------------------------------------- the diff (pure)


@dataclass(frozen=True)
class DiffContext:
    """What the diff needs besides the two rows: the academy of a school, the dates."""

    academy_of: Callable[[SnapshotRow], str]
    as_of: dt.date
    recorded_at: dt.datetime


def diff_pupil(before: SnapshotRow | None, after: SnapshotRow | None, ctx: DiffContext) -> list[dict[str, Any]]:
    """The events (codec-shaped records) that explain how one pupil went from ``before`` to ``after``."""
    if (before is not None and before.level == UNREADABLE) or (after is not None and after.level == UNREADABLE):
        return []
    if before is None and after is not None:
        return [_enrolment(after, None, ctx)]
    if after is None and before is not None:
        return [_departure(before, None, ctx)]
    assert before is not None and after is not None
    if before.uai != after.uai:
        return [_departure(before, after, ctx), _enrolment(after, before, ctx)]
    if before.entry_date != after.entry_date:
        return [_enrolment(after, None, ctx)]
    changed = [name for name in COMPARED if before.value(name) != after.value(name)]
    return [_correction(after, changed, ctx)] if changed else []


def event_id(*parts: object) -> str:
    """The deterministic id of an event: uuid5 of the content of the change."""
    return str(uuid.uuid5(ID_NAMESPACE, "|".join(str(p) for p in parts)))


def school_year_of(day: dt.date) -> int:
    """The school year (its first calendar year) a date falls in."""
    return day.year if day.month >= 9 else day.year - 1


def _at_school(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, 8, 0, tzinfo=dt.UTC)


def _envelope(row: SnapshotRow, event_type: str, ident: str, day: dt.date, ctx: DiffContext) -> dict[str, Any]:
    return {
        "event_id": ident,
        "event_type": event_type,
        "event_time": _at_school(day),
        "recorded_at": ctx.recorded_at,
        "source": {"system": "SNAPSHOT", "academy": ctx.academy_of(row)},
        "pupil": {
            "ine": row.ine,
            "birth_date": row.birth_date,
            "residence_commune": row.residence_commune,
            "last_name": row.last_name or None,
            "first_name": row.first_name or None,
            "sex": row.sex,
        },
        "school": row.uai,
        "school_year": school_year_of(day),
    }


def enrolment_id(row: SnapshotRow) -> str:
    """The id of the enrolment a row stands for (a correction of the row names it as its target)."""
    return event_id("enrolment", row.ine, row.uai, row.entry_date)


def _enrolment(row: SnapshotRow, origin: SnapshotRow | None, ctx: DiffContext) -> dict[str, Any]:
    record = _envelope(row, "enrolment", enrolment_id(row), row.entry_date, ctx)
    record["payload"] = {
        "level": row.level,
        "track": row.track or None,
        "entry_date": row.entry_date,
        "origin_school": origin.uai if origin else None,
    }
    return record


def _departure(row: SnapshotRow, to: SnapshotRow | None, ctx: DiffContext) -> dict[str, Any]:
    """The radiation of ``row``'s enrolment: to ``to``'s school, or to an unknown destination."""
    exit_date = max(row.entry_date, (to.entry_date - dt.timedelta(days=1)) if to else ctx.as_of)
    destination = to.uai if to else None
    ident = event_id("transfer", row.ine, row.uai, row.entry_date, destination)
    record = _envelope(row, "transfer", ident, exit_date, ctx)
    record["payload"] = {
        "level": row.level,
        "exit_date": exit_date,
        "destination_kind": "school" if to else "unknown",
        "destination_school": destination,
        "destination_commune": None,
    }
    return record


def _correction(row: SnapshotRow, changed: list[str], ctx: DiffContext) -> dict[str, Any]:
    values = [f"{name}={row.value(name)}" for name in changed]
    ident = event_id("correction", row.ine, row.uai, row.entry_date, *values)
    record = _envelope(row, "correction", ident, ctx.as_of, ctx)
    record["payload"] = {
        "target_event_id": enrolment_id(row),
        "level": row.level if "level" in changed else None,
        "track": (row.track or None) if "track" in changed else None,
        "changed_fields": changed,
    }
    return record


def academy_lookup(geography: Geography, fixed: str | None = None) -> Callable[[SnapshotRow], str]:
    """The académie of a row: ``fixed`` if given; else that of its school, of the département its
    UAI prefix names, or of its commune of residence; ``RowError`` when none is known."""
    by_prefix = {uai_prefix(code): dep.academy for code, dep in geography.departements.items()}

    def academy_of(row: SnapshotRow) -> str:
        if fixed:
            return fixed
        school = geography.schools.get(row.uai)
        if school is not None and school.academy:
            return school.academy
        if row.uai[:3] in by_prefix:
            return by_prefix[row.uai[:3]]
        if row.residence_commune in geography.communes:
            return geography.academy_of_commune(row.residence_commune).code
        raise RowError("UAI: no académie known for this school or commune of residence")

    return academy_of


# --------------------------------------------------------------------------- the import


class EventSink(Protocol):
    """Where the events go: the Kafka producer, or a list in tests."""

    def send(self, event: Event) -> object: ...

    def flush(self) -> None: ...


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pair_key(previous: Path, current: Path) -> str:
    """The ledger key of a pair of exports: the digests of both files."""
    return f"{file_digest(previous)}-{file_digest(current)}"


@dataclass
class Ledger:
    """The pairs already fully imported: one small JSON file per pair, under ``directory``."""

    directory: Path

    def done(self, key: str) -> bool:
        return (self.directory / f"{key}.json").exists()

    def record(self, key: str, report: ImportReport) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"sent": report.sent, "events": dict(report.events), "rows": report.rows, "rejected": report.rejected}
        (self.directory / f"{key}.json").write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")


def import_snapshot(
    previous: Path,
    current: Path,
    sink: EventSink,
    geography: Geography,
    *,
    as_of: dt.date,
    rejects_path: Path,
    ledger: Ledger | None = None,
    academy: str | None = None,
    chunk_rows: int = 50_000,
    progress: ProgressSink | None = None,
    recorded_at: dt.datetime | None = None,
) -> ImportReport:
    """Import the difference between two exports: send its events to ``sink``, flush, and report.

    Rows that break a rule are written to ``rejects_path`` (file;line;reason;row) and counted; the
    others are imported. A pair already in ``ledger`` is not sent again.
    """
    report = ImportReport(rejects_file=rejects_path)
    key = pair_key(previous, current) if ledger else ""
    if ledger and ledger.done(key):
        report.already_imported = True
        return report
    ctx = DiffContext(academy_lookup(geography, academy), as_of, recorded_at or dt.datetime.now(dt.UTC))
    with rejects_path.open("w", encoding="utf-8", newline="") as rejects_file:
        rejects_out = csv.writer(rejects_file, delimiter=";")
        rejects_out.writerow(["file", "line", "reason", "row"])

        def reject(item: Rejected) -> None:
            report.rejected[item.file] += 1
            rejects_out.writerow([item.file, item.line, item.reason, item.raw])

        with tempfile.TemporaryDirectory(prefix="scolaflux-snapshot-") as tmp:
            streams = {}
            for name, path in (("previous", previous), ("current", current)):
                work = Path(tmp) / name
                work.mkdir()
                rows = _counted(read_rows(path, name, reject, progress), report.rows, name)
                streams[name] = unique_pupils(sorted_rows(rows, work, chunk_rows), name, reject)
            joined = join_by_pupil(streams["previous"], streams["current"])
            for pupils, (before, after) in enumerate(joined, 1):
                _emit(before, after, ctx, sink, report, reject)
                if progress is not None and pupils % 20_000 == 0:
                    progress("pupils", pupils, None)
        sink.flush()
    if ledger:
        ledger.record(key, report)
    return report


def _counted(rows: Iterator[SnapshotRow], counts: dict[str, int], name: str) -> Iterator[SnapshotRow]:
    for row in rows:
        counts[name] += row.level != UNREADABLE
        yield row


def _emit(
    before: SnapshotRow | None,
    after: SnapshotRow | None,
    ctx: DiffContext,
    sink: EventSink,
    report: ImportReport,
    reject: Callable[[Rejected], None],
) -> None:
    """Send the events of one pupil; a pupil whose events break a rule is rejected as a whole
    (its current row, or its previous one if it left), so its history is never half-sent."""
    try:
        events = [validate_event(record) for record in diff_pupil(before, after, ctx)]
    except (RowError, InvalidEvent) as error:
        row = after or before
        assert row is not None
        reject(Rejected("current" if after else "previous", row.line, str(error), ";".join(_dump(row))))
        return
    for event in events:
        sink.send(event)
        report.events[event.event_type.value] += 1
        report.sent += 1
