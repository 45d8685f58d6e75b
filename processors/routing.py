"""Which authorities receive an event, and how: a ``Route`` per matching convention.

The foundation's router is hard-wired (one convention per demo authority); the conventions-as-code
router replaces it behind the same ``Router`` protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..schemas.models import COLLEGE_LEVELS, LYCEE_LEVELS, Event, EventType
from .identity import convention_key

Treatment = Literal["nominative", "pseudonymised", "aggregated"]
AuthorityLevel = Literal["commune", "departement", "region"]


@dataclass(frozen=True, slots=True)
class Route:
    """What one convention in force says about one event."""

    convention_id: str
    version: int
    authority_level: AuthorityLevel
    authority_code: str
    treatment: Treatment
    fields: frozenset[str]
    key: bytes = b""


class Router(Protocol):
    """Finds the routes of an event. ``school_commune`` is the INSEE code of the event's school."""

    def routes(
        self, event: Event, school_commune: str | None, school_departement: str | None, school_region: str | None
    ) -> Sequence[Route]: ...


_ARRIVALS_DEPARTURES = frozenset(
    {
        "last_name",
        "first_name",
        "sex",
        "birth_date",
        "residence_commune",
        "school",
        "school_commune",
        "school_year",
        "level",
        "entry_date",
        "origin_school",
        "exit_date",
        "destination_kind",
        "destination_school",
        "destination_commune",
        "target_ref",
        "changed_fields",
        "erasure_scope",
    }
)
_HEADCOUNTS = frozenset(
    {
        "birth_year",
        "residence_commune",
        "school",
        "school_year",
        "level",
        "track",
        "entry_date",
        "exit_date",
        "destination_kind",
        "target_ref",
        "changed_fields",
        "erasure_scope",
    }
)


@dataclass(frozen=True)
class HardWiredRouter:
    """One fixed convention per authority: communes (nominative, residents and their schools),
    départements (pseudonymised collège events), régions (pseudonymised lycée events)."""

    communes: tuple[str, ...]
    departements: tuple[str, ...]
    regions: tuple[str, ...]
    master_key: bytes

    def routes(
        self, event: Event, school_commune: str | None, school_departement: str | None, school_region: str | None
    ) -> list[Route]:
        found: list[Route] = []
        if event.event_type is not EventType.ABSENCE:
            for commune in {event.pupil.residence_commune, school_commune} & set(self.communes):
                found.append(self._route("commune", commune, "nominative", _ARRIVALS_DEPARTURES))
        level = getattr(event.payload, "level", None)
        if school_departement in self.departements and (level in COLLEGE_LEVELS or level is None):
            found.append(self._route("departement", school_departement, "pseudonymised", _HEADCOUNTS))
        if school_region in self.regions and (level in LYCEE_LEVELS or level is None):
            found.append(self._route("region", school_region, "pseudonymised", _HEADCOUNTS))
        return found

    def _route(self, level: AuthorityLevel, code: str, treatment: Treatment, fields: frozenset[str]) -> Route:
        convention_id = f"demo-{level}-{code}"
        return Route(convention_id, 1, level, code, treatment, fields, convention_key(self.master_key, convention_id))

    def convention_ids(self) -> Iterable[str]:
        """Every convention this router can route to (to create their delivery topics)."""
        yield from (f"demo-commune-{c}" for c in self.communes)
        yield from (f"demo-departement-{c}" for c in self.departements)
        yield from (f"demo-region-{c}" for c in self.regions)
