"""Hypothesis strategies: valid events over real geography, and mutations of their records.

Names always carry an accented letter and INEs are 11 characters, so that "the message does not
contain the pupil's INE or name" cannot pass or fail by accident on a short common word.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from functools import cache
from typing import Any

from hypothesis import strategies as st
from scolaflux.schemas.codec import AVRO_DIR, load_schema
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.identifiers import UAI_LETTERS, uai_check_letter
from scolaflux.schemas.models import COLLEGE_LEVELS, FIRST_DEGREE_LEVELS, LYCEE_LEVELS, Event
from scolaflux.schemas.validation import encode_event

from tests.conftest import make_event

Path = tuple[str | int, ...]

ines = st.one_of(
    st.from_regex(r"[0-9]{9}[A-Z]{2}", fullmatch=True),
    st.from_regex(r"[0-9]{10}[A-Z]", fullmatch=True),
    st.from_regex(r"[0-9]{4}A[0-9]{5}[A-Z]", fullmatch=True),
)
names = st.from_regex(r"[A-Z][a-z]{1,8}[éèçëïôüà][a-z]{1,8}", fullmatch=True)
uais = st.integers(0, 9_999_999).map(lambda n: f"{n:07d}{uai_check_letter(f'{n:07d}')}")
wrong_uais = st.tuples(st.integers(0, 9_999_999), st.sampled_from(UAI_LETTERS)).filter(
    lambda t: uai_check_letter(f"{t[0]:07d}") != t[1]
)


@cache
def _lyon_area() -> tuple[list[str], list[tuple[str, str]]]:
    """Communes of the Rhône, and (school, kind) pairs of its schools, from the reference geography."""
    geography = load_geography()
    communes = sorted(c for c in geography.communes if c.startswith("69"))
    schools = sorted((uai, s.kind) for uai, s in geography.schools.items() if s.commune.startswith("69"))
    return communes, schools


@st.composite
def events(draw: st.DrawFn, years: tuple[int, int] = (2020, 2030)) -> Event:
    """A valid event of any type about a pupil of the Rhône, at a real or synthetic school there,
    in a school year between ``years`` (first calendar years, inclusive)."""
    communes, schools = _lyon_area()
    school, kind = draw(st.sampled_from(schools))
    levels = {"ecole": FIRST_DEGREE_LEVELS, "college": COLLEGE_LEVELS}.get(kind, LYCEE_LEVELS)
    level = draw(st.sampled_from(levels))
    school_year = draw(st.integers(*years))
    day = draw(st.dates(dt.date(school_year, 9, 1), dt.date(school_year + 1, 7, 5)))
    when = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    birth = draw(st.dates(dt.date(school_year - 20, 1, 1), dt.date(school_year - 3, 12, 31)))
    event_type = draw(st.sampled_from(["enrolment", "transfer", "absence", "correction", "erasure"]))
    payload = draw(_payload(event_type, level, day, st.sampled_from(communes)))
    return Event.model_validate(
        {
            "event_id": uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
            "event_type": event_type,
            "event_time": when,
            "recorded_at": when + dt.timedelta(minutes=draw(st.integers(0, 10_000))),
            "source": {"system": draw(st.sampled_from(["ONDE", "SIECLE", "ATTENDANCE"])), "academy": "10"},
            "pupil": {
                "ine": draw(ines),
                "birth_date": birth,
                "residence_commune": draw(st.sampled_from(communes)),
                "last_name": draw(names),
                "first_name": draw(names),
                "sex": draw(st.sampled_from(["F", "M", None])),
            },
            "school": school,
            "school_year": school_year,
            "payload": payload,
        }
    )


def _payload(event_type: str, level: str, day: dt.date, communes: st.SearchStrategy[str]) -> st.SearchStrategy:
    if event_type == "enrolment":
        return st.fixed_dictionaries(
            {"level": st.just(level), "entry_date": st.just(day)},
            optional={"boarding": st.sampled_from(["day", "half_board", "boarder"]), "origin_school": uais},
        )
    if event_type == "transfer":
        return st.one_of(
            st.fixed_dictionaries(
                {"level": st.just(level), "exit_date": st.just(day), "destination_kind": st.just("school")},
                optional={"destination_school": uais},
            ).map(lambda p: {"destination_school": "0690026D", **p}),
            st.fixed_dictionaries(
                {"level": st.just(level), "exit_date": st.just(day), "destination_kind": st.just("commune")},
                optional={"destination_commune": communes},
            ),
            st.just({"level": level, "exit_date": day, "destination_kind": "unknown"}),
        )
    if event_type == "absence":
        return st.one_of(
            st.builds(
                lambda h, r: {"date": day, "half_days": h, "justified": True, "reason": r},
                st.integers(1, 2),
                st.sampled_from(["illness", "family", "transport", "other_valid"]),
            ),
            st.integers(1, 2).map(lambda h: {"date": day, "half_days": h, "justified": False, "reason": "unjustified"}),
        )
    if event_type == "correction":
        return st.just({"level": level, "changed_fields": ["level"]})
    return st.one_of(
        st.just({"scope": "pupil", "reason": "recorded in error"}),
        st.uuids().map(lambda u: {"scope": "event", "target_event_id": str(u), "reason": "duplicate"}),
    )


# --- mutations of an encodable record: each leaf gets another value of its Avro type -------------


@cache
def _event_schema() -> dict[str, Any]:
    return load_schema(AVRO_DIR / "event.avsc")


def leaves(schema: Any, value: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """(path, Avro type) of every leaf of a record as ``Event.to_avro`` makes it."""
    if isinstance(schema, list):  # a union: the branch the value is in
        if value is None:
            return [(path, schema)]
        if isinstance(value, tuple):  # the payload: (branch name, record)
            branch = next(b for b in schema if isinstance(b, dict) and value[0].endswith("." + b.get("name", "")))
            return leaves(branch, value[1], (*path, 1))
        return [(path, schema)]
    if isinstance(schema, dict) and schema.get("type") == "record":
        found = []
        for item in schema["fields"]:
            found += leaves(item["type"], value.get(item["name"]), (*path, item["name"]))
        return found
    return [(path, schema)]


def values_of(avro_type: Any, planted: list[str]) -> st.SearchStrategy[Any]:
    """Any value fastavro can write with ``avro_type``; strings may be a planted identifier."""
    if isinstance(avro_type, list):
        return st.one_of(*(values_of(t, planted) for t in avro_type))
    kind = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.one_of(st.text(max_size=40), st.sampled_from(planted))
    if kind == "boolean":
        return st.booleans()
    if logical == "date":
        return st.dates()
    if logical == "timestamp-millis":
        return st.datetimes(timezones=st.just(dt.UTC))
    if kind == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "long":
        return st.integers(-(2**63), 2**63 - 1)
    if kind == "enum":
        return st.sampled_from(avro_type["symbols"])
    if kind == "array":
        return st.lists(values_of(avro_type["items"], planted), max_size=4)
    raise AssertionError(f"no strategy for Avro type {avro_type!r}")


def set_path(record: dict[str, Any], path: Path, value: Any) -> None:
    """Set one leaf; inside the payload's (branch, record) pair, set it in the record."""
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[Event, dict[str, Any]]:
    """A valid event, and its Avro record with one to three leaves changed (still encodable).

    Strings may become the pupil's own INE or names, as when a column slips in a source file.
    """
    event = draw(events())
    record = copy.deepcopy(event.to_avro())
    pupil = event.pupil
    planted = [pupil.ine, pupil.last_name or "", pupil.first_name or "", pupil.ine.lower(), f" {pupil.ine} "]
    paths = leaves(_event_schema(), record)
    for _ in range(draw(st.integers(1, 3))):
        path, avro_type = draw(st.sampled_from(paths))
        set_path(record, path, draw(values_of(avro_type, planted)))
    return event, record


# --- mutations of a decoded record, as arbitrary JSON (the ingest path) -------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def dict_paths(value: Any, path: Path = ()) -> list[Path]:
    """Every path to a key or item of nested dicts and lists."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += dict_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += dict_paths(item, (*path, index))
    return found


@st.composite
def mutated_dicts(draw: st.DrawFn, record: dict[str, Any], planted: list[str]) -> dict[str, Any]:
    """``record`` with one to three keys replaced by arbitrary JSON or a planted string, deleted, or added."""
    values = json_values | st.sampled_from(planted)
    mutated = copy.deepcopy(record)
    for _ in range(draw(st.integers(1, 3))):
        paths = dict_paths(mutated)
        path = draw(st.sampled_from(paths))
        parent: Any = mutated
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(values)
        else:
            parent[path[-1]] = draw(values)
    return mutated


# --- mutations of single-object bytes --------------------------------------------------------

SEEDS = [  # valid single-object events of every type
    encode_event(make_event(t)) for t in ("enrolment", "transfer", "absence", "correction", "erasure")
] + [encode_event(make_event("enrolment", payload={"level": "6e", "entry_date": "2026-09-01", "boarding": "day"}))]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes] = SEEDS) -> bytes:
    """A valid single-object record, then bit flips, byte changes, insertions, deletions, a cut."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 6))]
        else:
            del data[at:]
    return bytes(data)
