"""Simulators of the source systems over the real geography: ONDE (écoles, 1st degree), SIECLE
(collèges and lycées, 2nd degree) and the schools' attendance software.

The simulation runs day by day from the rentrée (1 September) of ``school_year`` for ``days``
days and emits, in event-time order:

- the **rentrée wave**: every pupil's enrolment, most of them on the first two school days;
- **monthly mutations** (état des mutations): transfers to another school of the territory
  (followed by the enrolment there), moves to another commune, departures abroad or to home
  instruction, and departures with an **unknown destination**, half of which are never followed
  by an enrolment (the commune's "child lost from view" case);
- **daily absences** on school days, at the rates of DOMAIN.md (about 7 % of pupils absent on a
  school day, about a quarter of those without valid reason), a few persistent absentees making
  the monthly 4-unjustified-half-days warnings happen;
- **corrections** (a name, a birth date, the sex) and **erasures** (an absence recorded in error,
  or a whole pupil record).

A simulation that runs past the end of the school year continues with the next one: pupils move
up a level (collège after CM2, lycée after 3e), a few repeat, Terminale pupils leave and a new
cohort enters petite section.

Deterministic: one ``random.Random(seed)`` drives everything (event ids included), and nothing
iterates over a set or a hash-ordered structure, so the same parameters give the same events.

Fast: events are produced as plain dicts in the shape the codec reads and writes (``records``),
encoded without validation by trusted callers; ``events`` validates each into an ``Event``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..schemas.geography import Geography, School
from ..schemas.models import COLLEGE_LEVELS, LEVELS, LYCEE_LEVELS, Event

FIRST_NAMES = (
    "Léa", "Emma", "Louise", "Jade", "Alice", "Chloé", "Lina", "Mila", "Rose", "Anna", "Ambre", "Julia",
    "Gabriel", "Léo", "Raphaël", "Louis", "Arthur", "Jules", "Adam", "Maël", "Lucas", "Hugo", "Noah", "Sacha",
)  # fmt: skip
LAST_NAMES = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent",
    "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard",
    "Nguyen", "Diallo", "Da Silva", "Benali", "Mercier", "Blanc", "Garnier", "Faure", "Rousseau", "Lambert",
)  # fmt: skip
INE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"

SCHOOL_AGE_SHARE = 0.18
"""Pupils (3 to 18) per inhabitant: 11.9 M pupils (DOMAIN.md) for 68 M inhabitants."""
RENTREE_WAVE = (0.62, 0.18, 0.06, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01, 0.01)
"""Share of the year's enrolments declared on each of the first school days (rentrée wave)."""
ABSENT_SHARE = 0.062
"""Share of ordinary pupils absent on a school day (with the absentees: ~7 %, 400k of 5.6 M)."""
ABSENT_JUSTIFIED = 0.85
"""Share of ordinary absences with a valid reason (with the absentees: ~25 % unjustified)."""
ABSENTEE_SHARE = 0.04
"""Share of persistent absentees, each absent without reason on a quarter of school days."""
ABSENTEE_DAILY = 0.25
MOVES_PER_MONTH = 0.007
"""Share of pupils leaving their school in a month (état mensuel des mutations)."""
CORRECTIONS_PER_DAY = 0.0003
ERASURES_PER_DAY = 0.00005
REPEAT_SHARE = 0.02
"""Share of pupils repeating their level at the next rentrée (redoublement)."""
SCHOOL_DAYS_PER_MONTH = 17
DESTINATIONS = (
    ("school", 0.55),
    ("commune", 0.18),
    ("abroad", 0.08),
    ("home_instruction", 0.04),
    ("unknown", 0.15),
)
UNKNOWN_FOUND_LATER = 0.5
"""Share of departures to an unknown destination later followed by an enrolment."""
HOLIDAYS = (((10, 17), (11, 1)), ((12, 19), (12, 31)), ((1, 1), (1, 3)), ((2, 14), (3, 1)), ((4, 11), (4, 26)))
"""School holidays (approximate, one zone): month-day ranges, inclusive; summer is July-August."""
NAMESPACE = "fr.scolaflux"
BRANCHES = {
    "enrolment": f"{NAMESPACE}.Enrolment",
    "transfer": f"{NAMESPACE}.Transfer",
    "absence": f"{NAMESPACE}.Absence",
    "correction": f"{NAMESPACE}.Correction",
    "erasure": f"{NAMESPACE}.Erasure",
}

Record = dict[str, Any]
"""An event as the codec decodes it (``Event.from_avro`` validates it; ``avro_datum`` encodes it)."""


def kind_of_level(level: str) -> str:
    """The kind of school that teaches a level (école, collège, lycée)."""
    if level in LYCEE_LEVELS:
        return "lycee"
    return "college" if level in COLLEGE_LEVELS else "ecole"


def age_of_level(level: str) -> int:
    """The age reached during the calendar year of the rentrée by a pupil at ``level`` (PS: 3)."""
    return 3 + LEVELS.index(level)


def is_school_day(day: dt.date) -> bool:
    """Whether pupils are at school on ``day``: Monday to Friday outside holidays (approximate)."""
    if day.weekday() >= 5 or day.month in (7, 8):
        return False
    md = (day.month, day.day)
    return not any(start <= md <= end for start, end in HOLIDAYS)


def random_uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (so reproducible), as text: ``uuid.UUID(int=..., version=4)``
    without building the object."""
    bits = rng.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64)) & (2**128 - 1)
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def avro_datum(record: Record) -> Record:
    """The record with its payload as the named union branch that the codec's writer expects."""
    return {**record, "payload": (BRANCHES[record["event_type"]], record["payload"])}


class SimPupil:
    """What the simulator remembers of a pupil between events."""

    __slots__ = (
        "ine", "birth_date", "residence", "last_name", "first_name", "sex", "level", "track", "school",
        "absentee", "enrolment_id", "last_absence_id", "erased", "origin", "destination",
    )  # fmt: skip

    def __init__(self, ine: str, birth_date: dt.date, residence: str, level: str, rng: random.Random) -> None:
        self.ine = ine
        self.birth_date = birth_date
        self.residence = residence
        self.last_name = rng.choice(LAST_NAMES)
        self.first_name = rng.choice(FIRST_NAMES)
        self.sex = rng.choice("FM")
        self.level = level
        self.track: str | None = None
        self.school: School | None = None
        self.absentee = rng.random() < ABSENTEE_SHARE
        self.enrolment_id: str | None = None
        self.last_absence_id: str | None = None
        self.erased = False
        self.origin: str | None = None
        self.destination: str | None = None


@dataclass(frozen=True)
class Territory:
    """The communes whose resident children are simulated, and the schools serving them."""

    communes: tuple[str, ...]
    schools: dict[tuple[str, str], tuple[School, ...]]

    @classmethod
    def of(cls, geography: Geography, communes: Iterable[str]) -> Territory:
        """The territory of some communes (INSEE codes), each served by the schools of its kind in
        the commune, or else in its département."""
        codes = tuple(dict.fromkeys(communes))
        unknown = [c for c in codes if c not in geography.communes]
        if unknown:
            raise ValueError(f"unknown commune code(s): {', '.join(unknown[:5])}")
        schools: dict[tuple[str, str], tuple[School, ...]] = {}
        for code in codes:
            for kind in ("ecole", "college", "lycee"):
                near = tuple(s for s in geography.schools_in_commune(code) if s.kind == kind)
                if not near:
                    near = geography.schools_in_departement(geography.communes[code].departement, kind)  # type: ignore[arg-type]
                schools[code, kind] = near
        return cls(codes, schools)


def territory_communes(geography: Geography, communes: Sequence[str], departements: Sequence[str]) -> list[str]:
    """The commune codes of a territory given as communes and/or départements (whole communes:
    Paris, Lyon and Marseille count once, not by arrondissement)."""
    codes = list(communes)
    for dep in departements:
        codes.extend(c.code for c in geography.communes_in_departement(dep) if c.population > 0)
    return codes


class Simulator:
    """A consistent, deterministic stream of source events for the children resident in ``communes``.

    ``pupils_per_commune`` fixes the number of children per commune; ``None`` takes the commune's
    population times ``SCHOOL_AGE_SHARE`` times ``scale``. ``days`` is the simulated duration from
    the rentrée (``None``: without end, year after year).
    """

    def __init__(
        self,
        geography: Geography,
        communes: Sequence[str],
        seed: int = 1,
        school_year: int = 2026,
        pupils_per_commune: int | None = 200,
        scale: float = 1.0,
        days: int | None = None,
    ) -> None:
        self.geo = geography
        self.territory = Territory.of(geography, communes)
        self.rng = random.Random(seed)
        self.school_year = school_year
        self.rentree = dt.date(school_year, 9, 1)
        self.end = None if days is None else self.rentree + dt.timedelta(days=days)
        self._serial = self.rng.randrange(10**8)
        self._first_school_day: dt.date | None = None
        self._due: dict[dt.date, list[SimPupil]] = {}
        self._absentees: list[SimPupil] = []
        self.pupils: list[SimPupil] = []
        for commune in self.territory.communes:
            count = pupils_per_commune
            if count is None:
                count = round(geography.communes[commune].population * SCHOOL_AGE_SHARE * scale)
            self.pupils.extend(self._new_pupil(commune, self.rng.choice(LEVELS)) for _ in range(count))

    # ------------------------------------------------------------------ public surface

    def records(self) -> Iterator[Record]:
        """The events as plain records, in event-time order, until ``days`` have been simulated."""
        day = self.rentree
        while self.end is None or day < self.end:
            if day.month == 9 and day.day == 1 and day != self.rentree:
                self._next_school_year(day.year)
            yield from self._day(day)
            day += dt.timedelta(days=1)

    def events(self, count: int) -> Iterator[Event]:
        """At most ``count`` events, each validated (the slower path: for demos and tests)."""
        for made, record in enumerate(self.records()):
            if made >= count:
                return
            yield Event.from_avro(record)

    # ------------------------------------------------------------------ one day

    def _day(self, day: dt.date) -> Iterator[Record]:
        """The events of one day, in time order (a pupil's events keep their causal order)."""
        if not is_school_day(day):
            return
        actions: list[tuple[int, int, str, SimPupil]] = []
        self._plan_enrolments(day, actions)
        if self._first_school_day is not None and day > self._first_school_day:
            self._plan_mutations(actions)
            self._plan_absences(actions)
            self._plan_fixes(actions)
        actions.sort(key=lambda a: (a[0], a[1]))
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        for seconds, _, action, pupil in actions:
            record = self._act(action, pupil, midnight + dt.timedelta(seconds=seconds))
            if record is not None:
                yield record

    def _plan_enrolments(self, day: dt.date, actions: list[tuple[int, int, str, SimPupil]]) -> None:
        if self._first_school_day is None:
            self._first_school_day = day
            self._schedule_rentree(day)
        for pupil in self._due.pop(day, ()):
            actions.append((self._time_of_day(), len(actions), "enrol", pupil))

    def _schedule_rentree(self, first: dt.date) -> None:
        """Give every pupil the school day of the rentrée wave on which its enrolment is declared."""
        self._due = {}
        self._absentees = [p for p in self.pupils if p.absentee]
        days = [first]
        while len(days) < len(RENTREE_WAVE):
            days.append(_next_school_day(days[-1]))
        for pupil in self.pupils:
            self._due.setdefault(self.rng.choices(days, RENTREE_WAVE)[0], []).append(pupil)

    def _plan_mutations(self, actions: list[tuple[int, int, str, SimPupil]]) -> None:
        for pupil in self._sample(MOVES_PER_MONTH / SCHOOL_DAYS_PER_MONTH):
            actions.append((self._time_of_day(), len(actions), "leave", pupil))

    def _plan_absences(self, actions: list[tuple[int, int, str, SimPupil]]) -> None:
        for pupil in self._sample(ABSENT_SHARE):
            actions.append((self._time_of_day(), len(actions), "absence", pupil))
        for pupil in self._absentees:
            if self.rng.random() < ABSENTEE_DAILY:
                actions.append((self._time_of_day(), len(actions), "truancy", pupil))

    def _plan_fixes(self, actions: list[tuple[int, int, str, SimPupil]]) -> None:
        for pupil in self._sample(CORRECTIONS_PER_DAY):
            actions.append((self._time_of_day(), len(actions), "correct", pupil))
        for pupil in self._sample(ERASURES_PER_DAY):
            actions.append((self._time_of_day(), len(actions), "erase", pupil))

    def _sample(self, share: float) -> list[SimPupil]:
        """About ``share`` of the pupils, drawn at random (some may not be enrolled: skipped later)."""
        expected = share * len(self.pupils)
        count = int(expected) + (self.rng.random() < expected - int(expected))
        return self.rng.sample(self.pupils, min(count, len(self.pupils)))

    def _time_of_day(self) -> int:
        """Seconds after midnight UTC within school hours (8:00 to 17:00 in France, summer time)."""
        return 6 * 3600 + int(self.rng.random() * 9 * 3600)

    # ------------------------------------------------------------------ acts

    def _act(self, action: str, pupil: SimPupil, when: dt.datetime) -> Record | None:
        if pupil.erased:
            return None
        if action == "enrol":
            return self._enrol(pupil, when) if pupil.school is None else None
        if pupil.school is None:
            return None
        match action:
            case "absence":
                justified = self.rng.random() < ABSENT_JUSTIFIED
                return self._absence(pupil, when, justified)
            case "truancy":
                return self._absence(pupil, when, False)
            case "leave":
                return self._leave(pupil, when)
            case "correct":
                return self._correct(pupil, when)
            case _:
                return self._erase(pupil, when)

    def _enrol(self, pupil: SimPupil, when: dt.datetime) -> Record | None:
        school = self._school_for(pupil)
        if school is None:
            return None
        lycee = school.kind == "lycee"
        pupil.track = (pupil.track or self.rng.choice(("GT", "GT", "GT", "PRO", "CAP"))) if lycee else None
        payload = {"level": pupil.level, "track": pupil.track, "entry_date": when.date(), "origin_school": pupil.origin}
        pupil.school, pupil.origin, pupil.destination = school, None, None
        record = self._record("enrolment", pupil, school, when, payload)
        pupil.enrolment_id = record["event_id"]
        return record

    def _school_for(self, pupil: SimPupil) -> School | None:
        """The school a pupil enrols in: the one its radiation named, or one serving its commune."""
        if pupil.destination is not None:
            return self.geo.schools[pupil.destination]
        schools = self.territory.schools.get((pupil.residence, kind_of_level(pupil.level)), ())
        return self.rng.choice(schools) if schools else None

    def _leave(self, pupil: SimPupil, when: dt.datetime) -> Record:
        """A radiation (certificat de radiation): the pupil leaves its school, for somewhere."""
        school = pupil.school
        assert school is not None
        kind = self.rng.choices([d for d, _ in DESTINATIONS], [w for _, w in DESTINATIONS])[0]
        payload: dict[str, Any] = {"level": pupil.level, "exit_date": when.date(), "destination_kind": kind}
        payload["destination_school"] = payload["destination_commune"] = None
        later = self.rng.randint(1, 15)
        if kind == "school":
            others = [s for s in self.territory.schools[pupil.residence, school.kind] if s is not school]
            payload["destination_school"] = self.rng.choice(others or [school]).uai
            later = self.rng.randint(1, 5)
        elif kind == "commune":
            payload["destination_commune"] = self.rng.choice(self.territory.communes)
        record = self._record("transfer", pupil, school, when, payload)
        pupil.school = None
        if kind in ("school", "commune") or (kind == "unknown" and self.rng.random() < UNKNOWN_FOUND_LATER):
            self._enrol_later(pupil, when.date(), later, payload, school)
        return record

    def _enrol_later(self, pupil: SimPupil, day: dt.date, later: int, payload: Record, school: School) -> None:
        """Schedule the enrolment that follows a departure, in the destination (when known)."""
        if payload["destination_commune"]:
            pupil.residence = payload["destination_commune"]
        pupil.origin = school.uai if payload["destination_kind"] != "unknown" else None
        due = day
        for _ in range(later):
            due = _next_school_day(due)
        self._due.setdefault(due, []).append(pupil)
        pupil.destination = payload["destination_school"]

    def _absence(self, pupil: SimPupil, when: dt.datetime, justified: bool) -> Record:
        reason = self.rng.choice(("illness", "illness", "illness", "family", "transport", "other_valid"))
        payload = {
            "date": when.date(),
            "half_days": self.rng.choice((1, 2, 2)),
            "justified": justified,
            "reason": reason if justified else "unjustified",
        }
        assert pupil.school is not None
        record = self._record("absence", pupil, pupil.school, when, payload, system="ATTENDANCE")
        pupil.last_absence_id = record["event_id"]
        return record

    def _correct(self, pupil: SimPupil, when: dt.datetime) -> Record:
        """The source fixes the pupil's record: the envelope carries the corrected values."""
        field = self.rng.choice(("first_name", "last_name", "birth_date", "sex"))
        if field == "first_name":
            pupil.first_name = self.rng.choice([n for n in FIRST_NAMES if n != pupil.first_name])
        elif field == "last_name":
            pupil.last_name = self.rng.choice([n for n in LAST_NAMES if n != pupil.last_name])
        elif field == "birth_date":
            year = pupil.birth_date.year
            pupil.birth_date = dt.date(year, 1, 1) + dt.timedelta(days=self.rng.randrange(365))
        else:
            pupil.sex = "M" if pupil.sex == "F" else "F"
        payload = {"target_event_id": pupil.enrolment_id, "level": None, "track": None, "changed_fields": [field]}
        assert pupil.school is not None
        return self._record("correction", pupil, pupil.school, when, payload)

    def _erase(self, pupil: SimPupil, when: dt.datetime) -> Record:
        """An absence recorded in error, or (one time in five) the whole pupil record."""
        assert pupil.school is not None
        if pupil.last_absence_id is not None and self.rng.random() < 0.8:
            payload = {"target_event_id": pupil.last_absence_id, "scope": "event", "reason": "recorded in error"}
            pupil.last_absence_id = None
            return self._record("erasure", pupil, pupil.school, when, payload)
        payload = {"target_event_id": None, "scope": "pupil", "reason": "duplicate pupil record"}
        record = self._record("erasure", pupil, pupil.school, when, payload)
        pupil.erased, pupil.school = True, None
        return record

    def _record(
        self, event_type: str, pupil: SimPupil, school: School, when: dt.datetime, payload: Record, system: str = ""
    ) -> Record:
        system = system or ("ONDE" if school.kind == "ecole" else "SIECLE")
        return {
            "event_id": random_uuid(self.rng),
            "event_type": event_type,
            "event_time": when,
            "recorded_at": when + dt.timedelta(seconds=1 + int(self.rng.random() * 600)),
            "source": {"system": system, "academy": school.academy},
            "pupil": {
                "ine": pupil.ine,
                "birth_date": pupil.birth_date,
                "residence_commune": pupil.residence,
                "last_name": pupil.last_name,
                "first_name": pupil.first_name,
                "sex": pupil.sex,
            },
            "school": school.uai,
            "school_year": self._year_of(when.date()),
            "payload": payload,
        }

    def _year_of(self, day: dt.date) -> int:
        return day.year if day.month >= 9 else day.year - 1

    # ------------------------------------------------------------------ pupils and years

    def _new_pupil(self, commune: str, level: str, school_year: int | None = None) -> SimPupil:
        self._serial += 1
        year = (school_year or self.school_year) - age_of_level(level)
        birth = dt.date(year, 1, 1) + dt.timedelta(days=self.rng.randrange(365))
        ine = f"{self._serial % 10**9:09d}{self.rng.choice(INE_LETTERS)}{self.rng.choice(INE_LETTERS)}"
        return SimPupil(ine, birth, commune, level, self.rng)

    def _next_school_year(self, year: int) -> None:
        """The rentrée of ``year``: move everyone up a level (a few repeat), Terminale pupils leave,
        a new cohort enters petite section; every pupil is enrolled again in the wave."""
        staying: list[SimPupil] = []
        for pupil in self.pupils:
            if pupil.erased:
                continue
            if self.rng.random() >= REPEAT_SHARE:
                if pupil.level == LEVELS[-1]:
                    continue
                pupil.level = LEVELS[LEVELS.index(pupil.level) + 1]
            kind_changed = pupil.school is not None and pupil.school.kind != kind_of_level(pupil.level)
            pupil.origin = pupil.school.uai if kind_changed and pupil.school else None
            pupil.school, pupil.destination = None, None
            pupil.track = None if kind_changed else pupil.track
            staying.append(pupil)
        per_commune = max(1, len(self.pupils) // max(1, len(LEVELS) * len(self.territory.communes)))
        for commune in self.territory.communes:
            staying.extend(self._new_pupil(commune, "PS", year) for _ in range(per_commune))
        self.pupils = staying
        self.school_year = year
        self._first_school_day = None


def _next_school_day(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while not is_school_day(day):
        day += dt.timedelta(days=1)
    return day
