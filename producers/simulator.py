"""A simulator of the source systems over the real geography: ONDE (écoles), SIECLE (collèges,
lycées) and attendance software. Deterministic: the same seed gives the same events.

Pupils live in the chosen communes, are of the age of their level and enrolled in a school of
the right kind near home; after the rentrée wave come transfers (some with no known destination),
absences, corrections and erasures, each following what the pupil's history allows.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from ..schemas.geography import Geography, School
from ..schemas.models import COLLEGE_LEVELS, LEVELS, LYCEE_LEVELS, Event

FIRST_NAMES = (
    "Léa",
    "Emma",
    "Louise",
    "Jade",
    "Alice",
    "Chloé",
    "Lina",
    "Mila",
    "Rose",
    "Anna",
    "Gabriel",
    "Léo",
    "Raphaël",
    "Louis",
    "Arthur",
    "Jules",
    "Adam",
    "Maël",
    "Lucas",
    "Hugo",
    "Noah",
    "Sacha",
)
LAST_NAMES = (
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefebvre",
    "Leroy",
    "Roux",
    "David",
    "Bertrand",
    "Morel",
    "Fournier",
    "Girard",
)
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def kind_of_level(level: str) -> str:
    """The kind of school that teaches a level."""
    if level in LYCEE_LEVELS:
        return "lycee"
    return "college" if level in COLLEGE_LEVELS else "ecole"


@dataclass(frozen=True, slots=True)
class SimPupil:
    """What the simulator remembers of a pupil between events."""

    ine: str
    birth_date: dt.date
    residence: str
    last_name: str
    first_name: str
    sex: str
    level: str
    school: School | None = None
    last_event: str | None = None


class Simulator:
    """Generates a consistent stream of events for pupils resident in ``communes``."""

    def __init__(
        self,
        geography: Geography,
        communes: Sequence[str],
        seed: int = 1,
        school_year: int = 2026,
        pupils_per_commune: int = 200,
    ) -> None:
        self.geo = geography
        self.rng = random.Random(seed)
        self.school_year = school_year
        self.clock = dt.datetime(school_year, 9, 1, 8, 0, tzinfo=dt.UTC)
        self.pupils: dict[str, SimPupil] = {}
        self._serial = self.rng.randrange(10**8)
        for commune in communes:
            for _ in range(pupils_per_commune):
                pupil = self._new_pupil(commune)
                self.pupils[pupil.ine] = pupil

    def events(self, count: int) -> Iterator[Event]:
        """``count`` events: the rentrée enrolments first, then the year's movements and absences."""
        made = 0
        for ine in list(self.pupils):
            if made >= count:
                return
            if (event := self._enrol(self.pupils[ine])) is not None:
                made += 1
                yield event
        while made < count:
            yield self._next_event()
            made += 1

    def _next_event(self) -> Event:
        self.clock += dt.timedelta(seconds=self.rng.randint(1, 120))
        roll = self.rng.random()
        enrolled = [p for p in self._sample() if p.school is not None]
        pupil = enrolled[0] if enrolled else self._new_arrival()
        if pupil.school is None or roll < 0.08:
            return self._enrol(pupil) or self._absence(pupil)
        if roll < 0.18:
            return self._transfer(pupil)
        if roll < 0.21:
            return self._correction(pupil)
        if roll < 0.22:
            return self._erasure(pupil)
        return self._absence(pupil)

    def _sample(self) -> list[SimPupil]:
        return [self.pupils[ine] for ine in self.rng.sample(list(self.pupils), k=min(3, len(self.pupils)))]

    def _new_pupil(self, commune: str) -> SimPupil:
        self._serial += 1
        level = self.rng.choice(LEVELS)
        age = 3 + LEVELS.index(level)
        birth = dt.date(self.school_year - age, 1, 1) + dt.timedelta(days=self.rng.randrange(365))
        ine = f"{self._serial % 10**9:09d}{self.rng.choice(_LETTERS)}{self.rng.choice(_LETTERS)}"
        return SimPupil(
            ine, birth, commune, self.rng.choice(LAST_NAMES), self.rng.choice(FIRST_NAMES), self.rng.choice("FM"), level
        )

    def _new_arrival(self) -> SimPupil:
        pupil = self._new_pupil(self.rng.choice(sorted({p.residence for p in self.pupils.values()})))
        self.pupils[pupil.ine] = pupil
        return pupil

    def _school_for(self, pupil: SimPupil) -> School | None:
        kind = kind_of_level(pupil.level)
        near = [s for s in self.geo.schools_in_commune(pupil.residence) if s.kind == kind]
        if not near:
            departement = self.geo.communes[pupil.residence].departement
            near = list(self.geo.schools_in_departement(departement, kind))
        return self.rng.choice(near) if near else None

    def _event(self, pupil: SimPupil, school: School, payload: dict, event_type: str) -> Event:
        system = "ATTENDANCE" if event_type == "absence" else ("ONDE" if school.kind == "ecole" else "SIECLE")
        event = Event.model_validate(
            {
                "event_id": uuid.UUID(int=self.rng.getrandbits(128), version=4),
                "event_type": event_type,
                "event_time": self.clock,
                "recorded_at": self.clock + dt.timedelta(seconds=self.rng.randint(0, 30)),
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
                "school_year": self.school_year,
                "payload": payload,
            }
        )
        self.pupils[pupil.ine] = replace(self.pupils[pupil.ine], last_event=str(event.event_id))
        return event

    def _enrol(self, pupil: SimPupil, origin: School | None = None) -> Event | None:
        school = self._school_for(pupil)
        if school is None:
            return None
        track = self.rng.choice(("GT", "GT", "PRO")) if school.kind == "lycee" else None
        payload = {
            "level": pupil.level,
            "track": track,
            "entry_date": self.clock.date(),
            "origin_school": origin.uai if origin else None,
        }
        self.pupils[pupil.ine] = replace(pupil, school=school)
        return self._event(self.pupils[pupil.ine], school, payload, "enrolment")

    def _transfer(self, pupil: SimPupil) -> Event:
        assert pupil.school is not None
        school = pupil.school
        if self.rng.random() < 0.1:
            payload = {"level": pupil.level, "exit_date": self.clock.date(), "destination_kind": "unknown"}
        else:
            payload = {
                "level": pupil.level,
                "exit_date": self.clock.date(),
                "destination_kind": "commune",
                "destination_commune": pupil.residence,
            }
        self.pupils[pupil.ine] = replace(pupil, school=None)
        return self._event(self.pupils[pupil.ine], school, payload, "transfer")

    def _absence(self, pupil: SimPupil) -> Event:
        assert pupil.school is not None
        justified = self.rng.random() < 0.75
        reason = self.rng.choice(("illness", "family", "transport")) if justified else "unjustified"
        payload = {
            "date": self.clock.date(),
            "half_days": self.rng.choice((1, 2)),
            "justified": justified,
            "reason": reason,
        }
        return self._event(pupil, pupil.school, payload, "absence")

    def _correction(self, pupil: SimPupil) -> Event:
        assert pupil.school is not None
        corrected = replace(pupil, first_name=self.rng.choice(FIRST_NAMES))
        self.pupils[pupil.ine] = corrected
        payload = {"target_event_id": pupil.last_event, "changed_fields": ["first_name"]}
        return self._event(corrected, pupil.school, payload, "correction")

    def _erasure(self, pupil: SimPupil) -> Event:
        assert pupil.school is not None
        payload = {"target_event_id": pupil.last_event, "scope": "event", "reason": "recorded in error"}
        return self._event(pupil, pupil.school, payload, "erasure")
