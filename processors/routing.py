"""Which conventions receive an event, and how: a ``Route`` per convention in force that covers it.

The ``ConventionIndex`` finds candidate conventions through an index by territory (the pupil's
commune, département and région of residence; the school's commune, département and région) and by
school (UAI), so the cost of routing an event depends on the conventions that match it, not on how
many exist. Each candidate is then judged by its version in force at the event's own time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..schemas.geography import Geography, SchoolKind
from ..schemas.models import Event, EventType
from .conventions import LEVELS_OF_KIND, AuthorityLevel, Convention, Treatment, french_day
from .history import ConventionHistory
from .identity import convention_key

Place = tuple[str, str]
"""(what, code): ("residence:commune", "69123"), ("school:region", "84"), ("school", "0690026D")…"""
IndexKey = tuple[str, str, str, str]
"""(what, code, school kind, académie): a place, narrowed to the kind of school and the data owner."""


@dataclass(frozen=True, slots=True)
class Route:
    """What one convention in force says about one event: who, under which version, and how."""

    convention_id: str
    version: int
    authority_level: AuthorityLevel
    authority_code: str
    treatment: Treatment
    fields: frozenset[str]
    key: bytes = b""
    threshold: int = 5


@dataclass(frozen=True, slots=True)
class Location:
    """Where an event happens: its school (place and kind) and the pupil's residence.

    ``residence_communes`` holds the commune of residence and, for an arrondissement of Paris, Lyon
    or Marseille, its commune too. Places unknown to the reference geography are ``None``.
    """

    school: str
    school_kind: SchoolKind | None
    school_commune: str | None
    school_departement: str | None
    school_region: str | None
    residence_communes: tuple[str, ...]
    residence_departement: str | None
    residence_region: str | None

    def places(self) -> tuple[Place, ...]:
        """Every place under which a convention covering this location may be indexed."""
        keys: list[Place] = [("residence:commune", c) for c in self.residence_communes]
        for what, code in (
            ("residence:departement", self.residence_departement),
            ("residence:region", self.residence_region),
            ("school:commune", self.school_commune),
            ("school:departement", self.school_departement),
            ("school:region", self.school_region),
        ):
            if code is not None:
                keys.append((what, code))
        keys.append(("school", self.school))
        return tuple(keys)


class Router(Protocol):
    """Finds the routes of an event at its location."""

    def routes(self, event: Event, where: Location) -> Sequence[Route]: ...


@dataclass(frozen=True)
class Locator:
    """Locates events in the reference geography (a pure lookup, built once)."""

    geography: Geography

    def __call__(self, event: Event) -> Location:
        """The location of an event."""
        geo = self.geography
        school = geo.schools.get(event.school)
        school_commune = geo.communes.get(school.commune) if school else None
        residence = geo.communes.get(event.pupil.residence_commune)
        communes = (event.pupil.residence_commune,)
        if residence is not None and residence.parent is not None:
            communes += (residence.parent,)
        return Location(
            school=event.school,
            school_kind=school.kind if school else None,
            school_commune=school_commune.code if school_commune else None,
            school_departement=school_commune.departement if school_commune else None,
            school_region=school_commune.region if school_commune else None,
            residence_communes=communes,
            residence_departement=residence.departement if residence else None,
            residence_region=residence.region if residence else None,
        )


def index_keys(convention: Convention) -> set[IndexKey]:
    """The index keys a version of a convention is found under: its places, for each school kind."""
    level, code = convention.authority.level, convention.authority.code
    population = convention.population
    places: set[Place] = set()
    if population.basis in ("residence", "both"):
        places.add((f"residence:{level}", code))
    if population.basis in ("schooling", "both"):
        if population.schools is not None:
            places.update(("school", uai) for uai in population.schools)
        else:
            places.add((f"school:{level}", code))
    return {(what, where, kind, convention.academy) for what, where in places for kind in population.school_kinds}


def covers(convention: Convention, event: Event, where: Location) -> bool:
    """Whether an event is within a version's population and event types (validity aside)."""
    if event.event_type not in convention.events or event.source.academy != convention.academy:
        return False
    population = convention.population
    level = payload_level(event)
    kind = where.school_kind or _kind_of(level)
    if kind not in population.school_kinds:
        return False
    if level is not None and level not in population.allowed_levels:
        return False
    return _resident(convention, where) or _schooled(convention, where)


def _resident(convention: Convention, where: Location) -> bool:
    if convention.population.basis == "schooling":
        return False
    code = convention.authority.code
    match convention.authority.level:
        case "commune":
            return code in where.residence_communes
        case "departement":
            return code == where.residence_departement
        case _:
            return code == where.residence_region


def _schooled(convention: Convention, where: Location) -> bool:
    population = convention.population
    if population.basis == "residence":
        return False
    if population.schools is not None:
        return where.school in population.schools
    place = {"commune": where.school_commune, "departement": where.school_departement, "region": where.school_region}
    return place[convention.authority.level] == convention.authority.code


def payload_level(event: Event) -> str | None:
    """The level an event's payload names, if any (read from the fields: a payload without one
    would make pydantic raise and catch an AttributeError)."""
    return vars(event.payload).get("level")


def _kind_of(level: str | None) -> SchoolKind | None:
    """The kind of school that teaches a level (for a school the geography does not know)."""
    for kind, levels in LEVELS_OF_KIND.items():
        if level in levels:
            return kind
    return None


@dataclass(frozen=True)
class ConventionIndex:
    """An immutable snapshot of the conventions and their index; replaced whole when one changes."""

    histories: Mapping[str, ConventionHistory]
    keys: Mapping[str, bytes]
    index: Mapping[IndexKey, tuple[str, ...]] = field(repr=False)
    _routes: dict[tuple[str, int, EventType], Route] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(cls, histories: Iterable[ConventionHistory], master_key: bytes) -> ConventionIndex:
        """Index every version of every convention (an amendment may change the population)."""
        by_id = {h.id: h for h in histories}
        index: dict[IndexKey, set[str]] = defaultdict(set)
        for history in by_id.values():
            for version in history.versions:
                for key in index_keys(version):
                    index[key].add(history.id)
        return cls(
            histories=by_id,
            keys={cid: convention_key(master_key, cid) for cid in by_id},
            index={key: tuple(sorted(ids)) for key, ids in index.items()},
        )

    def candidates(self, event: Event, where: Location) -> set[str]:
        """The ids of the conventions indexed under a place of the event, its school kind and académie."""
        kind = where.school_kind or _kind_of(payload_level(event))
        if kind is None:
            return set()
        academy = event.source.academy
        found: set[str] = set()
        for what, code in where.places():
            found.update(self.index.get((what, code, kind, academy), ()))
        return found

    def routes(self, event: Event, where: Location) -> list[Route]:
        """A route per convention whose version in force at ``event_time`` delivers and covers the event."""
        found: list[Route] = []
        day = french_day(event.event_time)
        for convention_id in sorted(self.candidates(event, where)):
            version = self.histories[convention_id].in_force(event.event_time)
            if version is not None and version.delivers_on(day) and covers(version, event, where):
                found.append(self._route(version, event.event_type))
        return found

    def only(self, convention_id: str) -> ConventionIndex:
        """The index of one convention alone (for a backfill)."""
        history = self.histories[convention_id]
        index: dict[IndexKey, tuple[str, ...]] = {}
        for version in history.versions:
            for key in index_keys(version):
                index[key] = (history.id,)
        return ConventionIndex({history.id: history}, {history.id: self.keys[history.id]}, index)

    def _route(self, version: Convention, event_type: EventType) -> Route:
        """The route of a version for an event type, made once and kept (the index is immutable)."""
        made = self._routes.get((version.id, version.version, event_type))
        if made is None:
            made = self._routes[version.id, version.version, event_type] = Route(
                convention_id=version.id,
                version=version.version,
                authority_level=version.authority.level,
                authority_code=version.authority.code,
                treatment=version.identity,
                fields=version.fields_for(event_type),
                key=self.keys[version.id],
                threshold=version.threshold,
            )
        return made
