"""Data-sharing conventions as code: the model of a convention file, its rules, and its loader.

A convention (convention de partage de données) is signed by an académie and a local authority
(collectivité: commune, département, région). From the day it is in force, and only within it,
the authority receives data: the population, event types and fields it names, with the identity
treatment it names. Each file under ``conventions/`` is one version of one convention, in YAML.

Every problem is reported as a ``ConfigError`` naming the file, the field and the rule broken;
``check_file`` and ``check_directory`` collect all of them at once, the ``load_*`` functions raise.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..schemas.errors import ConfigError, ScolafluxError
from ..schemas.geography import Geography, SchoolKind
from ..schemas.models import COLLEGE_LEVELS, FIRST_DEGREE_LEVELS, LYCEE_LEVELS, UAI, EventType, Level
from .delivery import FIELDS_BY_TYPE, IDENTITY_FIELDS

Treatment = Literal["nominative", "pseudonymised", "aggregated"]
AuthorityLevel = Literal["commune", "departement", "region"]
Status = Literal["draft", "signed", "suspended", "ended"]
Basis = Literal["residence", "schooling", "both"]

FRANCE = ZoneInfo("Europe/Paris")
"""Dates in a convention (validity, signature) are French calendar days."""

LEVELS_OF_KIND: dict[SchoolKind, tuple[str, ...]] = {
    "ecole": FIRST_DEGREE_LEVELS,
    "college": COLLEGE_LEVELS,
    "lycee": LYCEE_LEVELS,
}

NOMINATIVE_BASES: dict[str, tuple[AuthorityLevel, str]] = {
    "L131-6": ("commune", "liste des enfants résidant dans la commune soumis à l'obligation d'instruction"),
    "R131-3": ("commune", "contenu de la liste scolaire tenue par le maire (mise à jour le 1er de chaque mois)"),
    "R131-10-1": ("commune", "traitement automatisé des données des enfants soumis à l'obligation d'instruction"),
    "L131-8": ("commune", "information du maire sur les élèves dont la famille a reçu un avertissement (absentéisme)"),
}
"""Code de l'éducation articles that allow nominative data, and the authority level they allow it to.

Only the mayor of the commune of residence is a lawful recipient of nominative pupil data among
local authorities; every other convention must be pseudonymised or aggregated."""

AGGREGATED_EVENT_TYPES = frozenset({EventType.ENROLMENT, EventType.TRANSFER, EventType.CORRECTION, EventType.ERASURE})
"""The event types that move a headcount (an absence does not)."""
AGGREGATED_FIELDS = frozenset({"school", "level"})
"""An aggregated convention receives counts by school and level: those are the only fields it may name."""

_ARTICLE = re.compile(r"^\s*(?:article\s+)?([LRD])\s*\.?\s*(\d+(?:-\d+)*)\s*$", re.IGNORECASE)
_ID = r"^[a-z0-9][a-z0-9-]{2,99}$"


def _quoted(value: Any) -> Any:
    """Codes must be quoted in YAML: unquoted, ``01`` reads as the number 1 and ``01234`` as 668."""
    if isinstance(value, bool | int | float):
        raise ValueError("must be quoted text (YAML reads an unquoted code such as 01 or 01234 as a number)")
    return value


def _article(value: Any) -> Any:
    """An article reference such as ``L131-6``, ``L. 131-6`` or ``article R131-3``, normalised."""
    if not isinstance(value, str) or not (match := _ARTICLE.match(value)):
        raise ValueError("must be an article reference such as L131-6 or R131-3")
    return match[1].upper() + match[2]


Code = Annotated[str, BeforeValidator(_quoted)]
Article = Annotated[str, BeforeValidator(_article)]


def french_day(moment: dt.datetime) -> dt.date:
    """The calendar day of a moment in France (validity dates are French days)."""
    return moment.astimezone(FRANCE).date()


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Authority(_Model):
    """The local authority (collectivité territoriale) that receives the data."""

    level: AuthorityLevel
    code: Code = Field(description="INSEE code of the commune, département or région.")
    name: str | None = None


class LegalBasis(_Model):
    """An article of law the sharing rests on (fondement juridique)."""

    article: Article
    code: str = "Code de l'éducation"
    text: str = Field(min_length=1)


_SETS: dict[frozenset[str], frozenset[str]] = {}


def _once(names: frozenset[str]) -> frozenset[str]:
    """The one instance of a set of names: a worker's thousands of conventions repeat the same few
    allow-lists and levels (one set each took 17 MB with 10,000 conventions)."""
    return _SETS.setdefault(names, names)


class Population(_Model):
    """Whose data the convention covers (population concernée).

    ``basis``: pupils residing in the authority's territory, enrolled in schools located in it, or
    both. ``school_kinds`` and ``levels`` narrow it (levels default to every level of the kinds);
    ``schools`` (UAIs), when given, limits the schooling side to those schools.
    """

    basis: Basis
    school_kinds: tuple[SchoolKind, ...] = Field(min_length=1)
    levels: tuple[Level, ...] | None = None
    schools: tuple[UAI, ...] | None = None

    @cached_property
    def allowed_levels(self) -> frozenset[str]:
        """The levels covered: those named, or every level of the school kinds."""
        if self.levels is not None:
            return _once(frozenset(self.levels))
        return _once(frozenset(level for kind in self.school_kinds for level in LEVELS_OF_KIND[kind]))


class Aggregation(_Model):
    """Options of an aggregated convention: cells under ``threshold`` pupils are suppressed."""

    threshold: int = Field(default=5, ge=1, le=1000)


class Convention(_Model):
    """One version of a data-sharing convention (convention de partage de données scolaires)."""

    id: Annotated[str, Field(pattern=_ID)]
    version: int = Field(ge=1)
    academy: Annotated[Code, Field(pattern=r"^[0-9]{2}$")]
    authority: Authority
    legal_basis: tuple[LegalBasis, ...] = Field(min_length=1)
    purposes: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)
    signed: dt.date | None = None
    valid_from: dt.date
    valid_until: dt.date
    effective_from: AwareDatetime | None = Field(
        default=None,
        description="When this version replaces the previous one (required from version 2 on); "
        "version 1 takes effect at the start of valid_from.",
    )
    status: Status
    population: Population
    events: dict[EventType, tuple[str, ...]] = Field(min_length=1)
    identity: Treatment
    aggregation: Aggregation | None = None
    retention_days: int = Field(ge=1, le=3650)

    @cached_property
    def takes_effect(self) -> dt.datetime:
        """The moment from which this version judges events."""
        if self.effective_from is not None:
            return self.effective_from
        return dt.datetime.combine(self.valid_from, dt.time(), FRANCE)

    @property
    def threshold(self) -> int:
        """The suppression threshold of an aggregated convention (5 unless the file says otherwise)."""
        return (self.aggregation or Aggregation()).threshold

    @cached_property
    def allowed_fields(self) -> dict[EventType, frozenset[str]]:
        """The allow-list of fields of each event type allowed (each distinct list made once)."""
        return {event_type: _once(frozenset(names)) for event_type, names in self.events.items()}

    def fields_for(self, event_type: EventType) -> frozenset[str]:
        """The fields allowed for an event type (empty if the type is not allowed)."""
        return self.allowed_fields.get(event_type, frozenset())

    def delivers_on(self, day: dt.date) -> bool:
        """Whether this version, taken as the one in force, lets data flow on a (French) day."""
        return self.status == "signed" and self.valid_from <= day <= self.valid_until

    def delivers(self, moment: dt.datetime) -> bool:
        """Whether this version, taken as the one in force, lets data flow at ``moment``."""
        return self.delivers_on(french_day(moment))


class ConventionFileError(ScolafluxError):
    """One or more convention files are wrong; ``errors`` lists every problem found."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Checked:
    """The result of checking conventions: those that are valid, and every problem found."""

    conventions: tuple[tuple[Path, Convention], ...]
    errors: tuple[ConfigError, ...]


# --------------------------------------------------------------------------- loading


def check_file(path: Path, geography: Geography | None = None) -> tuple[Convention | None, list[ConfigError]]:
    """Parse and validate one convention file; returns the convention (if valid) and every problem."""
    name = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, [ConfigError(name, "(file)", f"cannot be read: {exc.strerror}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return None, [ConfigError(name, "(file)", f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}")]
    if not isinstance(data, dict):
        return None, [ConfigError(name, "(file)", "must be a YAML mapping of convention fields")]
    try:
        convention = Convention.model_validate(data)
    except ValidationError as exc:
        return None, [ConfigError(name, _where(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in _errors(exc)]
    problems = [ConfigError(name, field, rule) for field, rule in convention_rules(convention, geography)]
    if not problems and path.stem != convention.id:
        problems.append(ConfigError(name, "id", f"must match the file name ({path.stem!r}), so a file is found by id"))
    return (None if problems else convention), problems


def load_convention(path: Path, geography: Geography | None = None) -> Convention:
    """A valid convention from its file, or ``ConventionFileError`` listing every problem."""
    convention, problems = check_file(path, geography)
    if problems or convention is None:
        raise ConventionFileError(problems)
    return convention


def convention_files(directory: Path) -> list[Path]:
    """The convention files of a directory (``*.yaml``/``*.yml``, not in subdirectories)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def check_directory(directory: Path, geography: Geography | None = None) -> Checked:
    """Check every convention file of a directory, and that no two files share an id."""
    if not directory.is_dir():
        return Checked((), (ConfigError(str(directory), "(directory)", "does not exist or is not a directory"),))
    valid: list[tuple[Path, Convention]] = []
    errors: list[ConfigError] = []
    seen: dict[str, Path] = {}
    for path in convention_files(directory):
        convention, problems = check_file(path, geography)
        errors.extend(problems)
        if convention is None:
            continue
        if convention.id in seen:
            errors.append(ConfigError(str(path), "id", f"{convention.id!r} is already the id of {seen[convention.id]}"))
            continue
        seen[convention.id] = path
        valid.append((path, convention))
    return Checked(tuple(valid), tuple(errors))


def load_directory(directory: Path, geography: Geography | None = None) -> list[Convention]:
    """Every convention of a directory, or ``ConventionFileError`` listing every problem in it."""
    checked = check_directory(directory, geography)
    if checked.errors:
        raise ConventionFileError(list(checked.errors))
    return [convention for _, convention in checked.conventions]


def _errors(exc: ValidationError) -> Iterator[dict[str, Any]]:
    yield from exc.errors(include_input=False, include_url=False)


def _where(loc: Iterable[Any]) -> str:
    """A pydantic location as a dotted field path (``events.transfer.2``); dict-key errors end in [key]."""
    parts = [str(p) for p in loc if p != "[key]"]
    return ".".join(parts) or "(file)"


# --------------------------------------------------------------------------- rules


def convention_rules(convention: Convention, geography: Geography | None = None) -> Iterator[tuple[str, str]]:
    """The (field, rule) of every rule a structurally valid convention breaks."""
    yield from _date_rules(convention)
    yield from _field_rules(convention)
    yield from _treatment_rules(convention)
    yield from _population_rules(convention)
    if geography is not None:
        yield from _geography_rules(convention, geography)


def _date_rules(c: Convention) -> Iterator[tuple[str, str]]:
    if c.valid_until < c.valid_from:
        yield "valid_until", "must not be before valid_from"
    if c.status != "draft" and c.signed is None:
        yield "signed", f"is required when status is {c.status!r} (only a draft may be unsigned)"
    if c.signed is not None and c.signed > c.valid_until:
        yield "signed", "must not be after valid_until"
    if c.version > 1 and c.effective_from is None:
        yield "effective_from", "is required from version 2 on (when this version replaces the previous one)"


def _field_rules(c: Convention) -> Iterator[tuple[str, str]]:
    for event_type, names in c.events.items():
        known = FIELDS_BY_TYPE[event_type]
        if not names:
            yield f"events.{event_type.value}", "must name at least one field (leave the type out to exclude it)"
        for i, name in enumerate(names):
            if name not in known:
                yield f"events.{event_type.value}.{i}", f"unknown field {name!r} for {event_type.value} events"
        if len(set(names)) != len(names):
            yield f"events.{event_type.value}", "names a field twice"


def _treatment_rules(c: Convention) -> Iterator[tuple[str, str]]:
    if c.identity == "nominative":
        allowing = [b.article for b in c.legal_basis if NOMINATIVE_BASES.get(b.article, ("",))[0] == c.authority.level]
        if not allowing:
            lawful = ", ".join(a for a, (level, _) in NOMINATIVE_BASES.items() if level == c.authority.level)
            rule = f"nominative data needs a legal basis that allows it for a {c.authority.level}"
            yield "identity", rule + (f" ({lawful})" if lawful else ": none does; use pseudonymised or aggregated")
    else:
        for event_type, names in c.events.items():
            for name in sorted(IDENTITY_FIELDS & set(names)):
                yield f"events.{event_type.value}", f"identity field {name!r} is never delivered when {c.identity}"
    if c.identity == "aggregated":
        for event_type, names in c.events.items():
            if event_type not in AGGREGATED_EVENT_TYPES:
                yield f"events.{event_type.value}", "absences do not move a headcount (aggregated convention)"
            for name in sorted(set(names) - AGGREGATED_FIELDS):
                yield f"events.{event_type.value}", f"an aggregated convention counts by school and level: {name!r}"
    elif c.aggregation is not None:
        yield "aggregation", "is only for an aggregated convention"


def _population_rules(c: Convention) -> Iterator[tuple[str, str]]:
    population = c.population
    if len(set(population.school_kinds)) != len(population.school_kinds):
        yield "population.school_kinds", "names a kind twice"
    kind_levels = {level for kind in population.school_kinds for level in LEVELS_OF_KIND[kind]}
    for i, level in enumerate(population.levels or ()):
        if level not in kind_levels:
            yield f"population.levels.{i}", f"{level} is not taught in {', '.join(population.school_kinds)}"
    if population.schools is not None:
        if population.basis == "residence":
            yield "population.schools", "a list of schools needs basis 'schooling' or 'both'"
        if not population.schools:
            yield "population.schools", "must name at least one school (leave it out for every school)"


def _geography_rules(c: Convention, geography: Geography) -> Iterator[tuple[str, str]]:
    if c.academy not in geography.academies:
        yield "academy", "is not an académie code"
        return
    level, code = c.authority.level, c.authority.code
    if level == "commune":
        commune = geography.communes.get(code)
        if commune is None:
            yield "authority.code", "is not the INSEE code of a commune"
            return
        if commune.parent is not None:
            yield "authority.code", f"is an arrondissement: name its commune ({commune.parent}), which signs for it"
            return
        territory_academy = geography.departements[commune.departement].academy
    elif level == "departement":
        if code not in geography.departements:
            yield "authority.code", "is not a département code"
            return
        territory_academy = geography.departements[code].academy
    else:
        if code not in geography.regions:
            yield "authority.code", "is not a région code"
            return
        territory_academy = c.academy if geography.academies[c.academy].region == code else ""
    if territory_academy != c.academy:
        yield "academy", f"académie {c.academy} does not cover the {level} {code}: it can only share the data it holds"
    yield from _school_rules(c, geography)


def _school_rules(c: Convention, geography: Geography) -> Iterator[tuple[str, str]]:
    for i, uai in enumerate(c.population.schools or ()):
        school = geography.schools.get(uai)
        if school is None:
            yield f"population.schools.{i}", "is not a school of the reference geography"
            continue
        if school.kind not in c.population.school_kinds:
            yield f"population.schools.{i}", f"is a {school.kind}, not among population.school_kinds"
        commune = geography.communes[school.commune]
        located = {"commune": commune.code, "departement": commune.departement, "region": commune.region}
        if located[c.authority.level] != c.authority.code:
            yield f"population.schools.{i}", f"is not located in the {c.authority.level} {c.authority.code}"
