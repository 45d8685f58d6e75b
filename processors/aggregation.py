"""Aggregated conventions: headcounts by school and level, cells under a threshold suppressed.

The per-event pipeline turns each event an aggregated convention covers into a ``Movement`` (a
pupil, pseudonymised under the convention's key, enters, leaves or changes level at a school) on an
internal topic keyed by convention and school. The aggregation stage keeps, per convention and
school, which pupils are at which level, and publishes a cell's new value (its count, or
"suppressed" under the threshold) only when that value changes: once per batch of movements, as
the batch leaves it (``apply_batch``).

The state does not depend on the order movements arrive in: a pupil's place at a school is a fold
of their movements there in event order (an erased record left out), so replays and backfills
converge to the same counts; a movement applied twice is recognised by its pupil's movements and
changes nothing. A worker keeps this state on disk, one file per partition of the aggregation topic
(``processors.headcount_state``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

from ..schemas.models import Correction, Enrolment, Erasure, Event, Transfer
from .delivery import delivery_id, epoch_millis
from .routing import Route

Action = Literal["enter", "leave", "relevel", "erase_event"]


@dataclass(frozen=True, slots=True)
class Movement:
    """A change of one pupil's place in one aggregated convention's headcounts (internal record)."""

    convention_id: str
    version: int
    authority_level: str
    authority_code: str
    threshold: int
    school: str
    pupil: str
    action: Action
    level: str | None
    event_id: str
    event_ref: str
    target_ref: str | None
    event_type: str
    event_time: int
    recorded_at: int

    @property
    def order(self) -> list[Any]:
        """The total order of movements of one pupil: event time, then recording time, then id."""
        return [self.event_time, self.recorded_at, self.event_id]

    def to_bytes(self) -> bytes:
        """The record on the aggregation topic (JSON: internal to the processor)."""
        return json.dumps({name: getattr(self, name) for name in _MOVEMENT_FIELDS}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Movement:
        """A movement read from the aggregation topic."""
        return cls(**json.loads(data))

    @property
    def partition_key(self) -> bytes:
        """Key on the aggregation topic: one convention's school stays in one partition."""
        return f"{self.convention_id}|{self.school}".encode()


_MOVEMENT_FIELDS = tuple(f.name for f in fields(Movement))


def movement(event: Event, route: Route, pupil: str, event_ref: str, target_ref: str | None) -> Movement | None:
    """The headcount movement an event makes under an aggregated route, or None if it makes none."""
    payload = event.payload
    level: str | None = None
    match payload:
        case Enrolment():
            action: Action = "enter"
            level = payload.level
        case Transfer():
            action = "leave"
        case Correction() if payload.level is not None:
            action, level = "relevel", payload.level
        case Erasure():
            action = "leave" if payload.scope == "pupil" else "erase_event"
        case _:
            return None
    return Movement(
        convention_id=route.convention_id,
        version=route.version,
        authority_level=route.authority_level,
        authority_code=route.authority_code,
        threshold=route.threshold,
        school=event.school,
        pupil=pupil,
        action=action,
        level=level,
        event_id=str(event.event_id),
        event_ref=event_ref,
        target_ref=target_ref,
        event_type=event.event_type.value,
        event_time=epoch_millis(event.event_time),
        recorded_at=epoch_millis(event.recorded_at),
    )


class State(Protocol):
    """A key-value state, e.g. a dict (a missing key reads None)."""

    def get(self, key: str, default: Any = None, /) -> Any: ...

    def __setitem__(self, key: str, value: Any, /) -> None: ...


@dataclass(frozen=True, slots=True)
class CellValue:
    """A cell as published: its count, or None when suppressed under the threshold."""

    level: str
    count: int | None


def apply_movement(members: State, counts: State, move: Movement) -> list[CellValue]:
    """Apply a movement to the state; returns the cells whose published value changed.

    ``members`` maps convention|school|pupil to the pupil's movements there (deduplicated by event);
    their place is a fold of those movements in event order, an erased record left out, so the
    result does not depend on the order they arrive in. ``counts`` maps convention|school|level to
    the number of pupils placed there. The two maps change together: kept apart (a crash between
    two writes), a replayed movement would count its pupil twice.

    A movement already applied changes nothing and republishes, with their values now, the cells
    of every level its pupil has a movement at there: the cells it changed when it was applied
    (which depended on the movements there then) are among them, and their delivery may have been
    lost (a worker resuming at the committed offset replays movements its state already holds).
    """
    member_key = f"{move.convention_id}|{move.school}|{move.pupil}"
    stored: list[list[Any]] = members.get(member_key) or []
    if any(known[0] == move.order for known in stored):
        levels = sorted({level for _, _, level, _, _ in stored if level is not None})
        return [CellValue(level, _published(counts.get(_cell_key(move, level), 0), move.threshold)) for level in levels]
    entries = sorted([*stored, [move.order, move.action, move.level, move.event_ref, move.target_ref]], key=_first)
    members[member_key] = entries
    old_level, new_level = place(stored), place(entries)
    if old_level == new_level:
        return []
    changed = []
    for level, step in ((old_level, -1), (new_level, 1)):
        if level is not None:
            key = _cell_key(move, level)
            before = counts.get(key, 0)
            counts[key] = before + step
            after = _published(before + step, move.threshold)
            if after != _published(before, move.threshold):
                changed.append(CellValue(level, after))
    return changed


CellKey = tuple[str, str, str]
"""A cell: convention, school, level."""


def apply_batch(
    members: State, counts: State, moves: Iterable[Movement], changed: dict[CellKey, tuple[Movement, CellValue]]
) -> None:
    """Apply movements; ``changed`` keeps, for each cell whose published value changed, its last
    value and the movement that gave it (a batch sends each changed cell once, as it ends)."""
    for move in moves:
        for cell in apply_movement(members, counts, move):
            changed[move.convention_id, move.school, cell.level] = (move, cell)


def place(entries: list[list[Any]]) -> str | None:
    """The level a pupil is counted at (None: not counted), from their movements in event order."""
    erased = {target for _, action, _, _, target in entries if action == "erase_event"}
    level: str | None = None
    for _, action, new_level, ref, _ in entries:
        if ref in erased:
            continue  # an erased record counts as never having happened
        if action == "enter":
            level = new_level
        elif action == "leave":
            level = None
        elif action == "relevel" and level is not None:
            level = new_level
    return level


def _cell_key(move: Movement, level: str) -> str:
    return f"{move.convention_id}|{move.school}|{level}"


def _first(entry: list[Any]) -> Any:
    return entry[0]


def _published(count: int, threshold: int) -> int | None:
    return count if count >= threshold else None


def cell_delivery(move: Movement, cell: CellValue, now: dt.datetime) -> dict[str, Any]:
    """The delivery record of a cell's value under an aggregated convention, sent at ``now``.

    Its id names the movement, the cell and the time: a view keeps a cell's newest delivery and
    skips a delivery id it has applied, and the same movement can send the same cell again with
    another value (applied again, or its record twice on the topic, the last of a batch to touch
    the cell: see ``apply_movement``); under an id without the time, the view skipped that value.
    """
    suppressed = cell.count is None
    return {
        "delivery_id": delivery_id(move.event_id, f"{move.convention_id}/{cell.level}@{epoch_millis(now)}"),
        "event_ref": move.event_ref,
        "event_type": move.event_type,
        "event_time": move.event_time,  # Avro's millis, as kept in the movement
        "recorded_at": move.recorded_at,
        "delivered_at": now,
        "convention_id": move.convention_id,
        "convention_version": move.version,
        "authority_level": move.authority_level,
        "authority_code": move.authority_code,
        "identity_treatment": "aggregated",
        "subject": None,
        "fields": ["aggregate"],
        "aggregate": {"school": move.school, "level": cell.level, "count": cell.count, "suppressed": suppressed},
    }
