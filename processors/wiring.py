"""Builds the processor's pipeline from settings and the reference geography."""

from __future__ import annotations

from ..infra.settings import Settings
from ..schemas.geography import Geography
from .pipeline import Pipeline, Place
from .routing import HardWiredRouter


def school_places(geography: Geography) -> dict[str, Place]:
    """(commune, département, région) of every school, by UAI."""
    places: dict[str, Place] = {}
    for uai, school in geography.schools.items():
        commune = geography.communes.get(school.commune)
        if commune is not None:
            places[uai] = (commune.code, commune.departement, commune.region)
    return places


def hardwired_router(settings: Settings) -> HardWiredRouter:
    """The foundation's router: one fixed convention per authority named in settings."""
    by_level: dict[str, list[str]] = {"commune": [], "departement": [], "region": []}
    for authority in settings.hardwired_authorities:
        level, code = authority.split(":", 1)
        by_level[level].append(code)
    return HardWiredRouter(
        tuple(by_level["commune"]),
        tuple(by_level["departement"]),
        tuple(by_level["region"]),
        settings.pseudonym_key.get_secret_value().encode(),
    )


def build_pipeline(settings: Settings, geography: Geography) -> Pipeline:
    """The pure pipeline the faust agent runs."""
    places = school_places(geography)
    return Pipeline(
        router=hardwired_router(settings),
        school_place=places.get,
        known_commune=geography.communes.__contains__,
        deadletter_topic=settings.deadletter_topic,
        delivery_topic=settings.delivery_topic,
    )
