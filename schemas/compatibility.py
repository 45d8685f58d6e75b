"""BACKWARD_TRANSITIVE compatibility of the Avro contracts with their history.

Every schema ``avro/NAME.avsc`` keeps each version it has had in ``avro/history/NAME.vN.avsc``
(N = 1, 2, ...; the newest one is the current schema, frozen). Data written with *every* older
version must stay readable with the current one under Avro's schema-resolution rules: a new field
needs a default, a type changes only by a legal promotion (int → long → float → double, string ↔
bytes), an enum keeps its symbols unless it has a default, a union keeps the branches written.

Nothing here re-implements Avro's rules. Two independent checks, both from libraries:

1. **structural**: Apache Avro's ``ReaderWriterCompatibilityChecker`` (the Python port of Java's
   ``SchemaCompatibility``), with the current schema as reader and each old version as writer;
2. **by example**: fastavro's ``generate_many`` makes sample records for each old version,
   fastavro writes them with that version and reads them back with the current schema, the very
   resolution the codec performs on the raw topic (fastavro also checks every default's type).

Run ``python -m scolaflux.schemas.compatibility`` to check the shipped schemas.
"""

from __future__ import annotations

import io
import json
import random
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from .codec import AVRO_DIR, load_schema
from .errors import ScolafluxError

SAMPLES = 300
"""Sample records written per old version: enough to hit every enum symbol and union branch."""

_VERSION = re.compile(r"^(?P<name>.+)\.v(?P<number>[1-9][0-9]*)\.avsc$")


class IncompatibleSchema(ScolafluxError):
    """A schema change that breaks BACKWARD_TRANSITIVE compatibility, or a history that is not kept."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("incompatible schema change:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Version:
    """One frozen version of a schema: ``history/NAME.vN.avsc``."""

    name: str
    number: int
    path: Path
    schema: dict[str, Any]


def schema_names(avro_dir: Path = AVRO_DIR) -> list[str]:
    """The names of the current schemas (``event`` for ``avro/event.avsc``)."""
    return sorted(p.stem for p in avro_dir.glob("*.avsc"))


def history(name: str, avro_dir: Path = AVRO_DIR) -> list[Version]:
    """The frozen versions of a schema, oldest first (by version number, not file name)."""
    versions = []
    for path in (avro_dir / "history").glob(f"{name}.v*.avsc"):
        found = _VERSION.match(path.name)
        if found and found["name"] == name:
            versions.append(Version(name, int(found["number"]), path, load_schema(path)))
    return sorted(versions, key=lambda v: v.number)


def structural_problems(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``, by Apache Avro's checker."""
    try:
        parsed_reader = avro.schema.parse(json.dumps(reader))
        parsed_writer = avro.schema.parse(json.dumps(writer))
    except avro.errors.AvroException as exc:
        return [f"not a valid Avro schema: {exc}"]
    result = ReaderWriterCompatibilityChecker().get_compatibility(parsed_reader, parsed_writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(k.value for k in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    what = "; ".join(sorted(result.messages))
    return [f"at {where}: {what} ({kinds})"]


def resolution_problems(
    reader: dict[str, Any], writer: dict[str, Any], samples: int = SAMPLES, seed: int = 0
) -> list[str]:
    """Why fastavro fails to read, with ``reader``, sample records written with ``writer``."""
    try:
        parsed_reader, parsed_writer = parse_schema(reader), parse_schema(writer)
    except Exception as exc:  # fastavro raises several types for a bad schema or default
        return [f"fastavro refuses the schema: {exc}"]
    failures: dict[str, int] = {}
    with _seeded(seed):
        records = list(generate_many(writer, samples))
    for record in records:
        out = io.BytesIO()
        schemaless_writer(out, parsed_writer, record)
        out.seek(0)
        try:
            schemaless_reader(out, parsed_writer, parsed_reader)
        except Exception as exc:  # any failure to resolve is the finding; its type varies by rule
            reason = f"{type(exc).__name__}: {exc}"
            failures[reason] = failures.get(reason, 0) + 1
    return [f"{count}/{samples} sample records unreadable: {reason}" for reason, count in failures.items()]


def compatibility_problems(
    reader: dict[str, Any], writer: dict[str, Any], samples: int = SAMPLES, seed: int = 0
) -> list[str]:
    """Both checks: an empty list when every record written with ``writer`` reads with ``reader``."""
    return structural_problems(reader, writer) + resolution_problems(reader, writer, samples, seed)


def check_schema(name: str, avro_dir: Path = AVRO_DIR, samples: int = SAMPLES) -> list[str]:
    """Every problem of one schema: a history not kept, or an old version the current one cannot read."""
    current_path = avro_dir / f"{name}.avsc"
    current = load_schema(current_path)
    versions = history(name, avro_dir)
    if not versions:
        return [f"{current_path.name}: no history; freeze it as history/{name}.v1.avsc (see history/README.md)"]
    problems = []
    numbers = [v.number for v in versions]
    if numbers != list(range(1, len(versions) + 1)):
        problems.append(f"history/{name}: versions {numbers} are not numbered 1..{len(versions)} without a gap")
    newest = versions[-1]
    if _without_docs(newest.schema) != _without_docs(current):
        problems.append(
            f"{current_path.name} differs from history/{newest.path.name}: "
            f"freeze the new version as history/{name}.v{newest.number + 1}.avsc (see history/README.md)"
        )
    for old in versions:
        for problem in compatibility_problems(current, old.schema, samples):
            problems.append(f"{current_path.name} cannot read data written with history/{old.path.name}: {problem}")
    return problems


def check_all(avro_dir: Path = AVRO_DIR, samples: int = SAMPLES) -> list[str]:
    """Every problem of every schema in ``avro_dir``."""
    return [problem for name in schema_names(avro_dir) for problem in check_schema(name, avro_dir, samples)]


def assert_backward_transitive(avro_dir: Path = AVRO_DIR, samples: int = SAMPLES) -> None:
    """Raise ``IncompatibleSchema`` listing every problem, if there is any."""
    problems = check_all(avro_dir, samples)
    if problems:
        raise IncompatibleSchema(problems)


def _without_docs(schema: Any) -> Any:
    """A schema with its ``doc`` strings left out: documentation may change within a version."""
    if isinstance(schema, dict):
        return {k: _without_docs(v) for k, v in schema.items() if k != "doc"}
    if isinstance(schema, list):
        return [_without_docs(item) for item in schema]
    return schema


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """fastavro's generator draws from the global ``random``: seed it, then give its state back."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def main() -> int:
    """Check the shipped schemas; print every problem; exit 1 if there is any."""
    problems = check_all()
    for problem in problems:
        print(problem, file=sys.stderr)
    names = ", ".join(f"{n} (v{len(history(n))})" for n in schema_names())
    print(f"{'INCOMPATIBLE' if problems else 'BACKWARD_TRANSITIVE compatible'}: {names}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
