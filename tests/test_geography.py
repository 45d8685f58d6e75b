"""The reference geography: real facts, synthetic schools, subsets (no broker)."""

from __future__ import annotations

import csv
import io
from importlib.resources import files

import pytest
from scolaflux.schemas.geography import (
    COLLEGE_MIN_POPULATION,
    COLLEGE_NUMBERS,
    ECOLE_NUMBERS,
    Geography,
    load_geography,
    uai_prefix,
)
from scolaflux.schemas.identifiers import normalise_uai

SUBSET = ("69", "2A", "976")


@pytest.fixture(scope="module")
def france() -> Geography:
    return load_geography()


@pytest.mark.parametrize(
    ("commune", "departement", "region", "academy"),
    [
        ("69123", "69", "84", "10"),  # Lyon
        ("75056", "75", "11", "01"),  # Paris
        ("75115", "75", "11", "01"),  # Paris 15e arrondissement
        ("2A004", "2A", "94", "27"),  # Ajaccio
        ("13055", "13", "93", "02"),  # Marseille
        ("14118", "14", "28", "70"),  # Caen
        ("93066", "93", "11", "24"),  # Saint-Denis
        ("92012", "92", "11", "25"),  # Boulogne-Billancourt
        ("97411", "974", "04", "28"),  # Saint-Denis (La Réunion)
        ("97611", "976", "06", "43"),  # Mamoudzou
    ],
)
def test_real_communes(france: Geography, commune: str, departement: str, region: str, academy: str) -> None:
    found = france.communes[commune]
    assert (found.departement, found.region) == (departement, region)
    assert france.academy_of_commune(commune).code == academy


def test_arrondissements_belong_to_their_commune(france: Geography) -> None:
    assert france.communes["69381"].parent == "69123"
    assert [c.code for c in france.communes_in_departement("75")] == ["75056"]
    assert len(france.communes_in_departement("75", arrondissements=True)) == 20
    assert len(france.communes_in_departement("13", arrondissements=True)) == 16


def test_counts_of_territories(france: Geography) -> None:
    assert len(france.departements) == 101
    assert len(france.regions) == 18
    assert len(france.academies) == 30
    assert 34_800 < sum(1 for c in france.communes.values() if c.parent is None) < 35_000
    assert {a.region for a in france.academies.values()} == set(france.regions)  # 18 régions académiques


@pytest.mark.parametrize(
    ("academy", "departements"),
    [
        ("01", {"75"}),
        ("24", {"77", "93", "94"}),
        ("25", {"78", "91", "92", "95"}),
        ("10", {"01", "42", "69"}),
        ("70", {"14", "27", "50", "61", "76"}),
        ("27", {"2A", "2B"}),
        ("32", {"971"}),
        ("31", {"972"}),
        ("33", {"973"}),
        ("28", {"974"}),
        ("43", {"976"}),
    ],
)
def test_academy_map(france: Geography, academy: str, departements: set[str]) -> None:
    assert {d.code for d in france.departements.values() if d.academy == academy} == departements


def test_every_departement_in_one_academy_of_its_region(france: Geography) -> None:
    for dep in france.departements.values():
        assert france.academies[dep.academy].region == dep.region, dep


@pytest.mark.parametrize(
    ("uai", "commune", "name"),
    [("0690026D", "69123", "LYCÉE DU PARC"), ("0750655E", "75056", "LYCÉE LOUIS LE GRAND")],
)
def test_real_lycees(france: Geography, uai: str, commune: str, name: str) -> None:
    school = france.schools[uai]
    assert (school.name, school.kind, school.synthetic) == (name, "lycee", False)
    assert france.commune_of_school(uai).code == commune
    assert school in france.schools_in_commune(commune)
    assert school in france.schools_in_departement(commune[:2], "lycee")


def test_every_uai_valid(france: Geography) -> None:
    for uai, school in france.schools.items():
        assert uai == school.uai == normalise_uai(uai)


def test_synthetic_uais_are_distinct_from_real_ones(france: Geography) -> None:
    firsts = [uai[:7] for uai in france.schools]
    assert len(set(firsts)) == len(firsts)  # not even two check letters on the same digits
    real = {s.uai[:7] for s in france.schools.values() if not s.synthetic}
    assert real.isdisjoint(s.uai[:7] for s in france.schools.values() if s.synthetic)


def test_synthetic_uais_in_their_reserved_ranges(france: Geography) -> None:
    ranges = {"ecole": ECOLE_NUMBERS, "college": COLLEGE_NUMBERS}
    for school in france.schools.values():
        if school.synthetic:
            assert school.uai.startswith(uai_prefix(school.departement))
            assert any(int(school.uai[3:7]) in numbers for numbers in ranges[school.kind]), school


def test_uai_prefixes() -> None:
    assert [uai_prefix(d) for d in ("01", "69", "2A", "2B", "971", "976")] == [
        "001",
        "069",
        "620",
        "720",
        "971",
        "976",
    ]


def test_school_counts_near_the_national_figures(france: Geography) -> None:
    kinds = [s.kind for s in france.schools.values()]
    assert 47_790 * 0.98 < kinds.count("ecole") < 47_790 * 1.02
    assert 6_980 * 0.97 < kinds.count("college") < 6_980 * 1.03
    assert 4_900 < kinds.count("lycee") < 5_200
    assert all(s.synthetic == (s.kind != "lycee") for s in france.schools.values())


def test_synthetic_schools_follow_population(france: Geography) -> None:
    for commune in france.communes.values():
        if commune.parent is None:
            kinds = [s.kind for s in france.schools_in_commune(commune.code) if s.synthetic]
            assert ("ecole" in kinds) == (commune.population > 0), commune
            assert ("college" in kinds) == (commune.population >= COLLEGE_MIN_POPULATION), commune
    assert len(france.schools_in_departement("976", "college")) >= 20  # Mayotte's populations filled


def test_every_school_in_a_commune_of_its_departement(france: Geography) -> None:
    for school in france.schools.values():
        commune = france.communes[school.commune]
        assert commune.parent is None
        assert commune.departement == school.departement
        assert france.departements[school.departement].academy == school.academy


def test_subset_holds_only_its_departements() -> None:
    part = load_geography(SUBSET)
    assert set(part.departements) == set(SUBSET)
    assert {c.departement for c in part.communes.values()} == set(SUBSET)
    assert {s.departement for s in part.schools.values()} == set(SUBSET)
    assert len(part.academies) == 30


def test_subset_is_the_same_as_in_the_whole(france: Geography) -> None:
    part = load_geography(SUBSET)
    assert part.schools == {u: s for u, s in france.schools.items() if s.departement in SUBSET}
    assert part.communes == {c: v for c, v in france.communes.items() if v.departement in SUBSET}


def test_loads_are_cached() -> None:
    assert load_geography(["69", "2A"]) is load_geography(("2a", "69"))
    assert load_geography() is load_geography(None)


def test_unknown_departement_is_refused() -> None:
    with pytest.raises(ValueError, match="20"):
        load_geography(["69", "20"])


def test_indexes(france: Geography) -> None:
    colleges = france.schools_in_departement("69", "college")
    assert colleges and all(s.kind == "college" and s.departement == "69" for s in colleges)
    all_69 = france.schools_in_departement("69")
    assert len(all_69) == sum(len(france.schools_in_departement("69", k)) for k in ("ecole", "college", "lycee"))
    assert france.schools_in_commune("00000") == ()


def test_dirty_uais_are_kept_apart(france: Geography) -> None:
    text = (files("scolaflux.schemas") / "reference" / "lycees_dirty_uai.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    for row in rows:
        assert row["uai"] not in france.schools, row
        assert row["reason"]
        if row["kept_as"]:
            assert row["kept_as"] == row["uai"].upper() and row["kept_as"] in france.schools
    with pytest.raises(ValueError):
        normalise_uai(next(r["uai"] for r in rows if "7 digits" in r["reason"]))
