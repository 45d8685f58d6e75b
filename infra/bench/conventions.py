"""Synthetic conventions for the benchmark: many valid conventions over the real geography.

For each académie taken in turn: one convention for its région (lycées, pseudonymised), one per
département (collèges, pseudonymised; and one aggregated headcount convention), then one per
commune, largest first (résidents of écoles and collèges, nominative under L131-6 as the commune's
instruction list allows). Every convention is checked by the processors' own rules against the
geography, so the benchmark routes through conventions the feed would accept.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from ...processors.conventions import Convention, convention_rules
from ...schemas.geography import Geography

DEFAULT_ACADEMIES = ("10", "08", "06", "02", "17", "25")
"""Lyon, Grenoble, Clermont-Ferrand, Aix-Marseille, Nantes, Versailles: several régions académiques."""

_PSEUDONYMISED_FIELDS = {
    "enrolment": ["school", "school_commune", "level", "track", "entry_date", "residence_commune", "birth_year"],
    "transfer": ["school", "level", "exit_date", "destination_kind", "destination_school", "destination_commune"],
    "correction": ["school", "level", "track", "target_ref", "changed_fields"],
    "erasure": ["school", "school_year", "target_ref", "erasure_scope"],
}
_NOMINATIVE_FIELDS = {
    **_PSEUDONYMISED_FIELDS,
    "enrolment": [*_PSEUDONYMISED_FIELDS["enrolment"], "last_name", "first_name", "sex", "birth_date"],
    "absence": ["school", "absence_date", "half_days", "justified", "absence_reason", "last_name", "first_name"],
}
_AGGREGATED_FIELDS = {"enrolment": ["school", "level"], "transfer": ["school", "level"], "erasure": ["school"]}


def synthetic_conventions(
    geography: Geography, count: int, academies: Sequence[str] = DEFAULT_ACADEMIES
) -> list[Convention]:
    """``count`` valid, signed conventions over ``academies`` (then every other académie if needed)."""
    others = sorted(a for a in geography.academies if a not in academies)
    made: list[Convention] = []
    for convention in itertools.chain(_all(geography, academies), _all(geography, others)):
        problems = list(convention_rules(convention, geography))
        if problems:  # a bug here, not in the input: say which rule
            raise ValueError(f"synthetic convention {convention.id} breaks {problems[0]}")
        made.append(convention)
        if len(made) == count:
            return made
    raise ValueError(f"the geography allows only {len(made)} synthetic conventions, not {count}")


def covered_communes(geography: Geography, conventions: Sequence[Convention]) -> list[str]:
    """The communes (not arrondissements) of the départements the conventions' académies hold."""
    academies = {c.academy for c in conventions}
    return [
        commune.code
        for dep in sorted(geography.departements.values(), key=lambda d: d.code)
        if dep.academy in academies
        for commune in geography.communes_in_departement(dep.code)
        if commune.population > 0
    ]


def _all(geography: Geography, academies: Sequence[str]) -> Iterator[Convention]:
    """Régions and départements of the académies first, then their communes, largest first, round-robin."""
    departements = {a: sorted(d.code for d in geography.departements.values() if d.academy == a) for a in academies}
    for academy in academies:
        yield _convention(f"bench-region-{academy}", academy, "region", geography.academies[academy].region, "lycee")
        for dep in departements[academy]:
            yield _convention(f"bench-dep-{dep.lower()}", academy, "departement", dep, "college")
            yield _convention(f"bench-dep-{dep.lower()}-counts", academy, "departement", dep, "college", "aggregated")
    communes = {
        a: sorted(
            (c for dep in departements[a] for c in geography.communes_in_departement(dep) if c.population > 0),
            key=lambda c: (-c.population, c.code),
        )
        for a in academies
    }
    for rank in range(max(len(c) for c in communes.values())):
        for academy in academies:
            if rank < len(communes[academy]):
                code = communes[academy][rank].code
                yield _convention(f"bench-commune-{code.lower()}", academy, "commune", code, "ecole", "nominative")


def _convention(
    ident: str, academy: str, level: str, code: str, kind: str, identity: str = "pseudonymised"
) -> Convention:
    kinds = ["ecole", "college"] if level == "commune" else [kind]
    fields = {"nominative": _NOMINATIVE_FIELDS, "aggregated": _AGGREGATED_FIELDS}.get(identity, _PSEUDONYMISED_FIELDS)
    article = "L131-6" if identity == "nominative" else "L213-1" if level == "departement" else "L214-1"
    data: dict[str, Any] = {
        "id": ident,
        "version": 1,
        "academy": academy,
        "authority": {"level": level, "code": code},
        "legal_basis": [{"article": article, "text": "benchmark convention"}],
        "purposes": ["benchmark"],
        "signed": dt.date(2026, 6, 1),
        "valid_from": dt.date(2026, 7, 1),
        "valid_until": dt.date(2029, 8, 31),
        "status": "signed",
        "population": {"basis": "residence" if level == "commune" else "schooling", "school_kinds": kinds},
        "events": fields,
        "identity": identity,
        "retention_days": 365,
    }
    return Convention.model_validate(data)
