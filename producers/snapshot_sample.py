"""Sample pairs of exports for the snapshot-diff import: for tests, the benchmark and a try-out.

``write_sample_pair`` writes a previous and a current export of ``rows`` pupils over the real
schools of some départements, streaming (any size, little memory), deterministic by seed. Between
the two: some pupils leave, some arrive, some change school, some have a field corrected, and
``bad_share`` of the current rows break a rule (a wrong UAI check letter, an impossible date, an
INE of the wrong format, a missing field).
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..schemas.geography import Geography, School
from ..schemas.models import LEVELS
from .simulator import FIRST_NAMES, INE_LETTERS, LAST_NAMES, age_of_level, kind_of_level
from .snapshot import COLUMNS


@dataclass(frozen=True)
class SampleChanges:
    """Shares of the pupils of the previous export that change before the current one."""

    leave: float = 0.02
    arrive: float = 0.02
    move: float = 0.02
    correct: float = 0.01
    bad: float = 0.001


def write_sample_pair(
    previous: Path,
    current: Path,
    geography: Geography,
    departements: Sequence[str],
    rows: int,
    seed: int = 1,
    changes: SampleChanges | None = None,
    school_year: int = 2026,
) -> None:
    """Write two exports of about ``rows`` pupils each, differing as ``changes`` says."""
    changes = changes or SampleChanges()
    rng = random.Random(seed)
    schools = _schools_by_kind(geography, departements)
    communes = sorted({s.commune for kinds in schools.values() for s in kinds})
    with (
        previous.open("w", encoding="utf-8-sig", newline="") as before_file,
        current.open("w", encoding="utf-8", newline="") as after_file,
    ):
        before, after = csv.writer(before_file, delimiter=";"), csv.writer(after_file, delimiter=";")
        before.writerow(COLUMNS)
        after.writerow(COLUMNS)
        for serial in range(rows):
            row = _pupil(rng, serial, schools, communes, school_year)
            roll = rng.random()
            if roll < changes.arrive:
                after.writerow(row)
                continue
            before.writerow(row)
            roll -= changes.arrive
            if roll < changes.leave:
                continue
            roll -= changes.leave
            if roll < changes.move:
                row = _moved(rng, row, schools)
            elif roll - changes.move < changes.correct:
                row = _corrected(rng, row)
            if rng.random() < changes.bad:
                row = _broken(rng, row)
            after.writerow(row)


def _schools_by_kind(geography: Geography, departements: Sequence[str]) -> dict[str, list[School]]:
    by_kind: dict[str, list[School]] = {"ecole": [], "college": [], "lycee": []}
    for dep in departements:
        for kind, found in by_kind.items():
            found.extend(geography.schools_in_departement(dep, kind))  # type: ignore[arg-type]
    return by_kind


def _pupil(
    rng: random.Random, serial: int, schools: dict[str, list[School]], communes: list[str], year: int
) -> list[str]:
    level = rng.choice(LEVELS)
    school = rng.choice(schools[kind_of_level(level)])
    birth = dt.date(year - age_of_level(level), 1, 1) + dt.timedelta(days=rng.randrange(365))
    entry = dt.date(year, 9, 1) + dt.timedelta(days=rng.choice((0, 0, 0, 1, 2, 7)))
    ine = f"{serial:09d}{rng.choice(INE_LETTERS)}{rng.choice(INE_LETTERS)}"
    home = school.commune if rng.random() < 0.8 else rng.choice(communes)
    track = rng.choice(("GT", "GT", "PRO", "CAP")) if school.kind == "lycee" else ""
    return [
        ine, rng.choice(LAST_NAMES).upper(), rng.choice(FIRST_NAMES), rng.choice("FM"),
        birth.strftime("%d/%m/%Y"), home, school.uai, level, track, entry.strftime("%d/%m/%Y"),
    ]  # fmt: skip


def _moved(rng: random.Random, row: list[str], schools: dict[str, list[School]]) -> list[str]:
    kind = kind_of_level(row[7])
    school = rng.choice(schools[kind])
    entry = dt.date(int(row[9][6:]), 9, 1) + dt.timedelta(days=rng.randrange(30, 120))
    return [*row[:6], school.uai, row[7], row[8], entry.strftime("%d/%m/%Y")]


def _corrected(rng: random.Random, row: list[str]) -> list[str]:
    row = list(row)
    column = rng.choice((1, 2, 3))
    if column == 3:
        row[3] = "M" if row[3] == "F" else "F"
    else:
        names = LAST_NAMES if column == 1 else FIRST_NAMES
        row[column] = rng.choice([n for n in names if n.upper() != row[column].upper()])
    return row


def _broken(rng: random.Random, row: list[str]) -> list[str]:
    row = list(row)
    match rng.randrange(4):
        case 0:
            row[6] = row[6][:7] + ("A" if row[6][7] != "A" else "B")  # wrong UAI check letter
        case 1:
            row[4] = "31/02/2015"
        case 2:
            row[0] = row[0][:8]
        case _:
            row = row[:-1]
    return row
