"""Avro single-object encoding (marker ``C3 01``, 8-byte CRC-64-AVRO fingerprint, datum).

A ``Codec`` writes with its current schema and reads any schema of its history, resolved to the
current one by Avro's rules, so old records stay readable after the schema evolves.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from .errors import DecodeError

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8
AVRO_DIR = Path(__file__).parent / "avro"


def fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a schema's parsing canonical form, little-endian."""
    return bytes.fromhex(avro_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def load_schema(path: Path) -> dict[str, Any]:
    """Read an ``.avsc`` file."""
    return json.loads(path.read_text(encoding="utf-8"))


class Codec:
    """Encode with ``schema``; decode records written with it or with any schema in ``history``."""

    def __init__(self, schema: dict[str, Any], history: Iterable[dict[str, Any]] = ()) -> None:
        self.name: str = schema["name"]
        self._reader = parse_schema(schema)
        self._header = MARKER + fingerprint(schema)
        self._writers: dict[bytes, dict[str, Any]] = {fingerprint(schema): self._reader}
        for old in history:
            self._writers.setdefault(fingerprint(old), parse_schema(old))

    def encode(self, record: dict[str, Any]) -> bytes:
        """Single-object encode a record (a dict as ``Event.to_avro`` makes it)."""
        out = io.BytesIO()
        out.write(self._header)
        schemaless_writer(out, self._reader, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode single-object bytes; raise ``DecodeError`` with the reason when they are not."""
        if len(data) < HEADER_SIZE or data[:2] != MARKER:
            raise DecodeError(f"not Avro single-object encoding (expected marker C3 01, {len(data)} bytes)")
        writer = self._writers.get(data[2:HEADER_SIZE])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()} for {self.name}")
        body = io.BytesIO(data[HEADER_SIZE:])
        try:
            record = schemaless_reader(body, writer, self._reader)
        except (EOFError, StopIteration, IndexError, ValueError, TypeError, OverflowError) as exc:
            # OverflowError: a corrupt date or timestamp beyond what Python's datetime can hold.
            raise DecodeError(f"truncated or corrupt {self.name} datum: {type(exc).__name__}") from exc
        if body.tell() != len(data) - HEADER_SIZE:
            raise DecodeError(f"{len(data) - HEADER_SIZE - body.tell()} trailing bytes after the {self.name} datum")
        return record


def _codec(name: str) -> Codec:
    history_dir = AVRO_DIR / "history"
    history = [load_schema(p) for p in sorted(history_dir.glob(f"{name}.v*.avsc"))]
    return Codec(load_schema(AVRO_DIR / f"{name}.avsc"), history)


@cache
def event_codec() -> Codec:
    """The codec of source events (``avro/event.avsc`` and its history)."""
    return _codec("event")


@cache
def delivery_codec() -> Codec:
    """The codec of deliveries (``avro/delivery.avsc`` and its history)."""
    return _codec("delivery")


@cache
def audit_codec() -> Codec:
    """The codec of audit records (``avro/audit.avsc`` and its history)."""
    return _codec("audit")
