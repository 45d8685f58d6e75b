"""Deliveries built in memory, as the processor writes them: for tests, benchmarks and demos of the
views without a processor (the real feed comes from ``processors/``).

``delivery`` builds one record of the Delivery schema; ``sample_stream`` a deterministic, plausible
stream for one authority over several school years (enrolments with grade progression, transfers,
departures with no known destination, absences, corrections, erasures, and duplicates such as a
producer retry leaves).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..schemas.codec import delivery_codec
from ..schemas.models import COLLEGE_LEVELS, FIRST_DEGREE_LEVELS, LEVELS, LYCEE_LEVELS
from .authority import Authority

NAMESPACE = uuid.UUID("0b5e6f3c-7d4f-4e0a-9a57-2d5d1f6c8e11")
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def uai(number: int) -> str:
    """A valid UAI (7 digits and their check letter) from a number."""
    digits = f"{number % 10**7:07d}"
    return digits + _LETTERS[int(digits) % 23]


def delivery(
    event_type: str,
    authority: Authority,
    *,
    subject: str | None,
    event_time: dt.datetime,
    convention_id: str | None = None,
    event_ref: str | None = None,
    treatment: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One delivery record (a dict for ``delivery_codec().encode``); ``fields`` are its data fields."""
    convention = convention_id or authority.demo_convention()
    ref = event_ref or str(uuid.uuid4())
    data = {name: value for name, value in fields.items() if value is not None}
    return {
        **data,
        "delivery_id": str(uuid.uuid5(NAMESPACE, f"{ref}/{convention}")),
        "event_ref": ref,
        "event_type": event_type,
        "event_time": event_time,
        "recorded_at": event_time,
        "delivered_at": event_time + dt.timedelta(seconds=1),
        "convention_id": convention,
        "convention_version": 1,
        "authority_level": authority.level,
        "authority_code": authority.code,
        "identity_treatment": treatment or ("nominative" if authority.level == "commune" else "pseudonymised"),
        "subject": subject,
        "fields": sorted(name for name in data if name != "aggregate"),
    }


def encode(record: dict[str, Any]) -> bytes:
    """The record as the delivery topic carries it."""
    return delivery_codec().encode(record)


def levels_of(authority: Authority) -> tuple[str, ...]:
    """The levels an authority's schools teach (communes: écoles and, for the list, collèges)."""
    return {"commune": FIRST_DEGREE_LEVELS + COLLEGE_LEVELS, "departement": COLLEGE_LEVELS}.get(
        authority.level, LYCEE_LEVELS
    )


@dataclass
class _Pupil:
    subject: str
    birth_date: dt.date
    first_name: str
    last_name: str
    sex: str
    level_index: int
    school: str
    track: str | None


def sample_stream(
    authority: Authority,
    *,
    seed: int = 1,
    pupils: int = 100,
    years: Sequence[int] = (2026,),
    schools: int = 4,
    convention_id: str | None = None,
    duplicates: float = 0.02,
) -> list[dict[str, Any]]:
    """A deterministic stream of deliveries for ``authority``, in event-time order."""
    rng = random.Random(seed)
    levels = levels_of(authority)
    school_ids = [uai(seed * 1000 + i) for i in range(schools)]
    commune = authority.code if authority.level == "commune" else f"{69000 + rng.randrange(300):05d}"
    out: list[dict[str, Any]] = []
    for n in range(pupils):
        first_year = rng.choice(years)
        level_index = rng.randrange(len(levels)) if first_year == years[0] else 0  # later cohorts enter at the bottom
        age = 3 + LEVELS.index(levels[level_index])
        pupil = _Pupil(
            subject=f"{seed:03d}{n:08d}AB"[-11:]
            if authority.level == "commune"
            else uuid.UUID(int=rng.getrandbits(128)).hex,
            birth_date=dt.date(first_year - age, 1, 1) + dt.timedelta(days=rng.randrange(365)),
            first_name=rng.choice(("Léa", "Emma", "Jules", "Hugo", "Chloé", "Noah")),
            last_name=rng.choice(("Martin", "Bernard", "Petit", "Durand", "Moreau")),
            sex=rng.choice("FM"),
            level_index=level_index,
            school=rng.choice(school_ids),
            track=rng.choice(("GT", "GT", "PRO")) if levels is LYCEE_LEVELS else None,
        )
        in_school = [year for year in years if year >= first_year]
        out.extend(_pupil_events(rng, authority, pupil, levels, in_school, school_ids, commune, convention_id))
    out.sort(key=lambda d: (d["event_time"], d["delivery_id"]))
    for index in sorted(rng.sample(range(len(out)), int(len(out) * duplicates)), reverse=True):
        out.insert(index + 1, out[index])  # a producer retry: the same delivery again, just after
    return out


def _pupil_events(
    rng: random.Random,
    authority: Authority,
    pupil: _Pupil,
    levels: Sequence[str],
    years: Sequence[int],
    school_ids: Sequence[str],
    commune: str,
    convention_id: str | None,
) -> Iterator[dict[str, Any]]:
    nominative = authority.level == "commune"
    identity: dict[str, Any] = {
        "birth_year": pupil.birth_date.year,
        "residence_commune": commune,
        **(
            {
                "last_name": pupil.last_name,
                "first_name": pupil.first_name,
                "sex": pupil.sex,
                "birth_date": pupil.birth_date,
            }
            if nominative
            else {}
        ),
    }

    def make(event_type: str, when: dt.datetime, **fields: Any) -> dict[str, Any]:
        return delivery(
            event_type,
            authority,
            subject=pupil.subject,
            event_time=when,
            convention_id=convention_id,
            event_ref=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            **identity,
            **fields,
        )

    for year in years:
        if pupil.level_index >= len(levels):
            return
        level = levels[pupil.level_index]
        start = dt.datetime(year, 9, 1, 8, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(20_000))
        enrolment = make(
            "enrolment",
            start,
            school=pupil.school,
            school_year=year,
            level=level,
            track=pupil.track,
            entry_date=start.date(),
        )
        yield enrolment
        last = enrolment
        when = start
        for _ in range(rng.randrange(4)):
            when += dt.timedelta(days=rng.randrange(1, 40), minutes=rng.randrange(600))
            justified = rng.random() < 0.6
            yield make(
                "absence",
                when,
                school=pupil.school,
                school_year=year,
                absence_date=when.date(),
                half_days=rng.choice((1, 2)),
                justified=justified,
                absence_reason="illness" if justified else "unjustified",
            )
        roll = rng.random()
        when += dt.timedelta(days=rng.randrange(1, 30))
        if roll < 0.08:  # left with no known destination; a third are found enrolled again later
            yield make(
                "transfer",
                when,
                school=pupil.school,
                school_year=year,
                level=level,
                exit_date=when.date(),
                destination_kind="unknown",
            )
            if rng.random() < 0.66:
                return
            when += dt.timedelta(days=rng.randrange(3, 60))
            pupil.school = rng.choice(school_ids)
            yield make("enrolment", when, school=pupil.school, school_year=year, level=level, entry_date=when.date())
        elif roll < 0.2:  # moves to another school of the authority
            new_school = rng.choice([s for s in school_ids if s != pupil.school] or school_ids)
            yield make(
                "transfer",
                when,
                school=pupil.school,
                school_year=year,
                level=level,
                exit_date=when.date(),
                destination_kind="school",
                destination_school=new_school,
            )
            pupil.school = new_school
            when += dt.timedelta(days=1)
            last = make(
                "enrolment",
                when,
                school=new_school,
                school_year=year,
                level=level,
                track=pupil.track,
                entry_date=when.date(),
            )
            yield last
        elif roll < 0.26:  # the source corrects the level of the last enrolment
            corrected = levels[min(pupil.level_index + 1, len(levels) - 1)]
            yield make(
                "correction",
                when,
                school=pupil.school,
                school_year=year,
                level=corrected,
                target_ref=last["event_ref"],
                changed_fields=["level"],
            )
        elif roll < 0.28:  # a record erased by its source
            yield make("erasure", when, school=pupil.school, target_ref=last["event_ref"], erasure_scope="event")
        elif roll < 0.29:
            yield make("erasure", when, school=pupil.school, erasure_scope="pupil")
            return
        if rng.random() < 0.9:  # most go up a level next year
            pupil.level_index += 1
