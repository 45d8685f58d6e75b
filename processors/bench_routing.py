"""How routing cost grows with the number of conventions: ``python -m scolaflux.processors.bench_routing``.

Builds N synthetic but valid conventions over the real geography of France (communes, départements
and régions, each with the académie that covers it, of every identity treatment), and routes the
same events through the index. The index makes the work per event depend on the conventions that
match it, not on N; a scan of every convention is measured beside it for contrast. Figures only:
nothing here asserts a speed (issue #7's benchmark reuses ``measure_routing``).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass

from ..schemas.geography import Commune, Geography, School, load_geography
from ..schemas.models import Event
from .conventions import Convention
from .history import ConventionHistory
from .routing import ConventionIndex, Locator, covers

KEY = b"bench-only-key"


@dataclass(frozen=True)
class RoutingFigures:
    """Routing figures for one number of conventions."""

    conventions: int
    events: int
    build_seconds: float
    microseconds_per_event: float
    candidates_per_event: float
    routes_per_event: float
    scan_microseconds_per_event: float | None

    def __str__(self) -> str:
        scan_us = self.scan_microseconds_per_event
        scan = f", scan of all {scan_us:.1f} µs/event" if scan_us else ""
        return (
            f"{self.conventions:>6} conventions: index built in {self.build_seconds:.2f} s, "
            f"{self.microseconds_per_event:.1f} µs/event, {self.candidates_per_event:.2f} candidates and "
            f"{self.routes_per_event:.2f} routes per event{scan}"
        )


CORE_DEPARTEMENTS = ("42", "44", "69")
"""Where the measured events happen (académies of Lyon and Nantes)."""
CORE_COMMUNES = ("69123", "69266", "42218", "44109", "44162")


def synthetic_conventions(geography: Geography, count: int, seed: int = 7) -> list[Convention]:
    """``count`` valid conventions, as a real deployment would hold them.

    The first ten cover the territory of the measured events: the communes of ``CORE_COMMUNES``
    (nominative), the départements of ``CORE_DEPARTEMENTS`` (pseudonymised collèges) and their
    régions by académie (aggregated lycées). The others cover the rest of France, one per authority
    and purpose, as signed conventions do: a pseudonymised collège convention per département
    (while ``count`` allows: 2 %), aggregated and pseudonymised lycée conventions per académie (1 %),
    and nominative conventions of distinct communes. So the events match the same conventions
    whatever ``count`` is, and only the number of conventions that do not match them grows.
    """
    rng = random.Random(seed)
    core_academies = {geography.departements[d].academy for d in CORE_DEPARTEMENTS}
    slots: list[tuple[tuple[str, str, str], str, list[str]]] = [
        *(_commune_slot(geography, geography.communes[c]) for c in CORE_COMMUNES),
        *(
            (("departement", d, geography.departements[d].academy), "pseudonymised", ["college"])
            for d in CORE_DEPARTEMENTS
        ),
        *((("region", geography.academies[a].region, a), "aggregated", ["lycee"]) for a in sorted(core_academies)),
    ]
    departements = [d for c, d in sorted(geography.departements.items()) if c not in CORE_DEPARTEMENTS]
    academies = [a for c, a in sorted(geography.academies.items()) if c not in core_academies]
    communes = sorted(
        (c for c in geography.communes.values() if c.parent is None and c.departement not in CORE_DEPARTEMENTS),
        key=_code,
    )
    for dep in rng.sample(departements, min(len(departements), count // 50)):
        slots.append((("departement", dep.code, dep.academy), "pseudonymised", ["college"]))
    for academy in rng.sample(academies, min(len(academies), count // 200)):
        slots.append((("region", academy.region, academy.code), "aggregated", ["lycee"]))
        slots.append((("region", academy.region, academy.code), "pseudonymised", ["lycee"]))
    for commune in rng.sample(communes, max(0, count - len(slots))):
        slots.append(_commune_slot(geography, commune))
    return [_convention(f"bench-{n}", *slot) for n, slot in enumerate(slots[:count])]


def _commune_slot(geography: Geography, commune: Commune) -> tuple[tuple[str, str, str], str, list[str]]:
    academy = geography.departements[commune.departement].academy
    return ("commune", commune.code, academy), "nominative", ["ecole", "college"]


def _code(commune: Commune) -> str:
    return commune.code


def _uai(school: School) -> str:
    return school.uai


def _convention(convention_id: str, authority: tuple[str, str, str], identity: str, kinds: list[str]) -> Convention:
    level, code, academy = authority
    fields = ["school", "level"] if identity == "aggregated" else ["school", "level", "residence_commune"]
    return Convention.model_validate(
        {
            "id": convention_id,
            "version": 1,
            "academy": academy,
            "authority": {"level": level, "code": code},
            "legal_basis": [{"article": "L131-6" if identity == "nominative" else "L213-1", "text": "bench"}],
            "purposes": ["bench"],
            "signed": dt.date(2026, 6, 1),
            "valid_from": dt.date(2026, 7, 1),
            "valid_until": dt.date(2029, 8, 31),
            "status": "signed",
            "population": {"basis": "both" if level == "commune" else "schooling", "school_kinds": kinds},
            "events": {"enrolment": fields, "transfer": fields},
            "identity": identity,
            "retention_days": 365,
        }
    )


def synthetic_events(geography: Geography, count: int, seed: int = 11) -> list[Event]:
    """``count`` enrolments of pupils living in ``CORE_DEPARTEMENTS``, in a school of their département."""
    rng = random.Random(seed)
    schools = sorted((s for s in geography.schools.values() if s.departement in CORE_DEPARTEMENTS), key=_uai)
    levels = {"ecole": "CP", "college": "6e", "lycee": "2nde"}
    made = []
    for n in range(count):
        school = rng.choice(schools)
        neighbours = geography.communes_in_departement(school.departement)
        home = rng.choice(neighbours or (geography.communes[school.commune],))
        when = dt.datetime(2026, 9, 1, 8, tzinfo=dt.UTC) + dt.timedelta(minutes=n)
        made.append(
            Event.model_validate(
                {
                    "event_id": f"00000000-0000-4000-8000-{n:012d}",
                    "event_type": "enrolment",
                    "event_time": when,
                    "recorded_at": when,
                    "source": {"system": "SIECLE", "academy": school.academy},
                    "pupil": {"ine": f"{n:09d}AB", "birth_date": dt.date(2014, 1, 1), "residence_commune": home.code},
                    "school": school.uai,
                    "school_year": 2026,
                    "payload": {"level": levels[school.kind], "entry_date": when.date()},
                }
            )
        )
    return made


def measure_routing(conventions: int, events: int = 5_000, scan_events: int = 0) -> RoutingFigures:
    """Route ``events`` events through an index of ``conventions`` conventions; figures per event.

    ``scan_events`` > 0 also times a scan of every convention over that many events, for contrast.
    """
    geography = load_geography()
    made = synthetic_conventions(geography, conventions)
    began = time.perf_counter()
    index = ConventionIndex.build([ConventionHistory.first(c) for c in made], KEY)
    build = time.perf_counter() - began
    locate = Locator(geography)
    located = [(e, locate(e)) for e in synthetic_events(geography, events)]
    candidates = routes = 0
    began = time.perf_counter()
    for event, where in located:
        routes += len(index.routes(event, where))
    elapsed = time.perf_counter() - began
    for event, where in located:
        candidates += len(index.candidates(event, where))
    scan = None
    if scan_events:
        began = time.perf_counter()
        for event, where in located[:scan_events]:
            [c for c in made if c.delivers(event.event_time) and covers(c, event, where)]
        scan = (time.perf_counter() - began) / min(scan_events, len(located)) * 1e6
    per_event = elapsed / events * 1e6
    return RoutingFigures(conventions, events, build, per_event, candidates / events, routes / events, scan)


def main() -> None:
    """Print the figures for 10 and 10,000 conventions."""
    for count in (10, 10_000):
        print(measure_routing(count, events=20_000, scan_events=200))


if __name__ == "__main__":
    main()
