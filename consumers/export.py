"""Sections as files: CSV the way a French office user opens it, and JSON.

CSV: UTF-8 with a byte-order mark (so a spreadsheet detects the encoding), ``;`` as separator by
default (the list separator of a French locale), dates in ISO 8601 (``2026-09-01``), decimal comma
when the separator is ``;``, CRLF line ends.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from .reports import Section

BOM = "\ufeff"


def to_csv(section: Section, separator: str = ";", bom: bool = True) -> str:
    """The section as CSV text (with its header even when it has no row)."""
    out = io.StringIO()
    if bom:
        out.write(BOM)
    writer = csv.writer(out, delimiter=separator, lineterminator="\r\n")
    writer.writerow(section.columns)
    decimal_comma = separator == ";"
    for row in section.rows:
        writer.writerow([_cell(row.get(column), decimal_comma) for column in section.columns])
    return out.getvalue()


def _cell(value: Any, decimal_comma: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "oui" if value else "non"
    if isinstance(value, float):
        text = f"{value:g}"
        return text.replace(".", ",") if decimal_comma else text
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def jsonable(value: Any) -> Any:
    """Dates and times as ISO strings, recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def to_json(section: Section) -> str:
    """The section as JSON: name, title, note, columns and rows."""
    payload = {
        "section": section.name,
        "title": section.title,
        "note": section.note,
        "columns": section.columns,
        "rows": section.rows,
    }
    return json.dumps(jsonable(payload), ensure_ascii=False, indent=1)
