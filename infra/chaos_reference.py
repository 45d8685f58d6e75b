"""The pure side of the chaos harness (``infra/chaos.py``): no broker, no process here.

- **The input**: simulated source events over real geography, with a known set of bad records
  among them (garbage, truncated records, unknown communes, wrong UAI check letters, malformed
  INEs, pupils born after the event), cut into waves; some waves are sent in another order
  (pupils interleaved differently, each pupil's events still in order) or followed by copies of
  events already sent (a retry, or a second source sending the same events), reordered.
- **The reference**: the view each authority would have after an uninterrupted run of the same
  events, computed in one process with the processor's own core (``Pipeline``, and
  ``apply_movement`` for aggregated headcounts) and the views' own apply (``apply_batch``), each
  event once, in source order.
- **The comparison**: what two views must share. Every row of the content tables, and the ids of
  the deliveries applied (with their event and recording times); not the wall-clock columns, the
  Kafka offsets (a re-sent copy shifts them) nor, for aggregated conventions, which delivery
  published a headcount cell: cells are published when their published value changes, so which
  movement publishes them depends on how pupils interleave. What must match there is every cell
  that shows a count, and its count (a cell below the threshold shows nothing, whether it was
  published as "suppressed" or never published).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from ..consumers.authority import Authority
from ..consumers.ledger import absences, aggregate_cells, movements, pupil_years
from ..consumers.store import Record, applied_deliveries, apply_batch, rejected_deliveries, view_counters
from ..consumers.views import AuthorityView
from ..processors.aggregation import Movement, apply_movement, cell_delivery
from ..processors.pipeline import Pipeline
from ..producers.simulator import Simulator, avro_datum, territory_communes
from ..schemas.codec import audit_codec, delivery_codec, event_codec
from ..schemas.errors import RejectedInput
from ..schemas.geography import Geography

Frame = tuple[bytes, bytes]
"""A raw record: key (the pupil's INE) and value (a single-object Avro event, or bad bytes)."""

BAD_KINDS = (
    "garbage",
    "truncated",
    "unknown commune",
    "wrong UAI check letter",
    "malformed INE",
    "born after the event",
)


# --------------------------------------------------------------------------- the input


def simulated_records(
    geography: Geography, departements: Sequence[str], count: int, scale: float, seed: int
) -> list[dict[str, Any]]:
    """The first ``count`` events the simulator makes for the départements (plain records)."""
    communes = territory_communes(geography, [], list(departements))
    simulator = Simulator(geography, communes, seed, 2026, pupils_per_commune=None, scale=scale, days=None)
    records: list[dict[str, Any]] = []
    for record in simulator.records():
        if len(records) >= count:
            break
        records.append(record)
    return records


def encode_records(records: Iterable[dict[str, Any]]) -> list[Frame]:
    """Records as raw frames, keyed by INE (what ``scolaflux simulate --out`` writes)."""
    codec = event_codec()
    return [(r["pupil"]["ine"].encode(), codec.encode(avro_datum(r))) for r in records]


def bad_frames(
    records: Sequence[dict[str, Any]], count: int, rng: random.Random, accept: Callable[[bytes], Any]
) -> list[Frame]:
    """``count`` distinct bad records of every kind in ``BAD_KINDS``, each checked to be refused by
    ``accept`` (the processor's ``Pipeline.accept``): a mutation that happens to stay valid is dropped."""
    found: dict[bytes, Frame] = {}
    attempts = 0
    while len(found) < count and attempts < count * 20:
        kind = BAD_KINDS[attempts % len(BAD_KINDS)]
        attempts += 1
        frame = _bad(kind, rng.choice(records), rng, attempts)
        if frame[1] in found:
            continue
        try:
            accept(frame[1])
        except RejectedInput:
            found[frame[1]] = frame
    return list(found.values())


def _bad(kind: str, base: dict[str, Any], rng: random.Random, n: int) -> Frame:
    """One bad record of ``kind`` made from a valid record (with an event id of its own)."""
    record = {**base, "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
    pupil = dict(record["pupil"])
    key = pupil["ine"].encode()
    if kind == "garbage":
        return b"garbage", f"chaos garbage {n}: not an Avro record ".encode() + rng.randbytes(8)
    if kind == "unknown commune":
        pupil["residence_commune"] = "99999"
    elif kind == "wrong UAI check letter":
        school = record["school"] or "0690026D"
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ".replace(school[-1], "")
        record["school"] = school[:7] + rng.choice(letters)
    elif kind == "malformed INE":
        pupil["ine"] = f"{rng.randrange(10**10):010d}"
    elif kind == "born after the event":
        pupil["birth_date"] = record["event_time"].date() + dt.timedelta(days=rng.randrange(1, 400))
    record["pupil"] = pupil
    value = event_codec().encode(avro_datum(record))
    if kind == "truncated":
        value = value[: rng.randrange(1, len(value) - 1)]
    return key, value


def interleave(valid: Sequence[Frame], bad: Sequence[Frame], rng: random.Random) -> list[Frame]:
    """The valid frames in their order, with the bad ones at random places among them."""
    slots = sorted(rng.randrange(len(valid) + 1) for _ in bad)
    stream: list[Frame] = []
    start = 0
    for slot, frame in zip(slots, bad, strict=True):
        stream.extend(valid[start:slot])
        stream.append(frame)
        start = slot
    stream.extend(valid[start:])
    return stream


def pupil_preserving_shuffle(frames: Sequence[Frame], rng: random.Random) -> list[Frame]:
    """The frames in a random interleaving of pupils, each pupil's (key's) frames still in order."""
    by_key: dict[bytes, list[Frame]] = defaultdict(list)
    for frame in frames:
        by_key[frame[0]].append(frame)
    turns = [frame[0] for frame in frames]
    rng.shuffle(turns)
    cursors: dict[bytes, Iterator[Frame]] = {key: iter(queue) for key, queue in by_key.items()}
    return [next(cursors[key]) for key in turns]


@dataclass(frozen=True)
class Wave:
    """What one round sends: a slice of the source stream, perhaps reordered, perhaps followed by copies."""

    frames: list[Frame]
    fresh: int
    note: str = ""


def waves(stream: Sequence[Frame], parts: int, bad: frozenset[bytes], rng: random.Random, disorder: bool) -> list[Wave]:
    """The stream cut into ``parts`` waves. With ``disorder``: the second wave goes in another
    interleaving of pupils and is followed by the first wave's valid events again (a retry, or a
    second source sending the same events); the third is followed by a fully shuffled copy of the
    valid events so far of a tenth of the pupils."""
    size = -(-len(stream) // parts)
    slices = [list(stream[i : i + size]) for i in range(0, len(stream), size)]
    result: list[Wave] = []
    for i, part in enumerate(slices):
        frames, note = part, ""
        if disorder and i == 1:
            copy = [f for f in slices[0] if f[1] not in bad]
            frames = pupil_preserving_shuffle(part, rng) + copy
            note = f"pupils interleaved differently, then wave 1's {len(copy):,} valid events again"
        elif disorder and i == 2:
            sent = [f for s in slices[: i + 1] for f in s if f[1] not in bad]
            keys = sorted({f[0] for f in sent})
            chosen = set(rng.sample(keys, max(1, len(keys) // 10)))
            copy = [f for f in sent if f[0] in chosen]
            rng.shuffle(copy)
            frames, note = part + copy, f"then {len(copy):,} earlier events of {len(chosen):,} pupils again, shuffled"
        result.append(Wave(frames, len(part), note))
    return result


# --------------------------------------------------------------------------- the reference


@dataclass
class Reference:
    """What an uninterrupted run of the source stream delivers, audits and dead-letters."""

    deliveries: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    audit_ids: set[str] = field(default_factory=set)
    deadletters: set[bytes] = field(default_factory=set)


def reference_run(pipeline: Pipeline, stream: Iterable[Frame]) -> Reference:
    """Each frame once, in order, through the processor's core; aggregated headcounts folded as the
    processor's aggregation agent folds them (``apply_movement``), cells published as it publishes them."""
    clock = _ticking(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    pipeline = dataclasses.replace(pipeline, clock=clock)
    topics = pipeline.topics
    prefix = topics.delivery("")
    members: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    audit = audit_codec()
    cell_codec = delivery_codec()
    result = Reference()
    for offset, (key, value) in enumerate(stream):
        for output in pipeline.process(value, key, f"reference/0/{offset}"):
            if output.topic == topics.audit:
                result.audit_ids.add(audit.decode(output.value)["delivery_id"])
            elif output.topic == topics.deadletter:
                result.deadletters.add(output.value)
            elif output.topic == topics.aggregation:
                move = Movement.from_bytes(output.value)
                for cell in apply_movement(members, counts, move):
                    record = cell_delivery(move, cell, clock())
                    result.deliveries[move.convention_id].append(cell_codec.encode(record))
            else:
                result.deliveries[output.topic.removeprefix(prefix)].append(output.value)
    return result


def _ticking(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock one millisecond later at each call (deliveries keep the order they were made in)."""
    ticks = iter(range(10**12))
    return lambda: start + dt.timedelta(milliseconds=next(ticks))


def build_reference_view(
    engine: Engine, authority: Authority, conventions: Sequence[str], reference: Reference, batch: int = 2_000
) -> None:
    """Apply the reference deliveries of the authority's conventions to an empty view, in order."""
    view = AuthorityView(authority)
    view.create(engine)
    for convention in conventions:
        values = reference.deliveries.get(convention, [])
        for start in range(0, len(values), batch):
            chunk = values[start : start + batch]
            records = [Record(convention, 0, start + i, value, []) for i, value in enumerate(chunk)]
            apply_batch(engine, records, view)


# --------------------------------------------------------------------------- the comparison


def comparable(engine: Engine, aggregated: frozenset[str]) -> dict[str, set[tuple[Any, ...]]]:
    """What two runs of the same events must agree on in a view (see the module's docstring)."""
    rows: dict[str, set[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in (movements, absences, pupil_years):
            rows[table.name] = {_plain(row) for row in conn.execute(select(table))}
        cells = aggregate_cells.c
        shown = select(cells.convention_id, cells.school, cells.level, cells["count"]).where(
            cells.suppressed.is_(False)
        )
        rows["headcount cells showing a count"] = {_plain(row) for row in conn.execute(shown)}
        applied = applied_deliveries.c
        ids = select(applied.delivery_id, applied.convention_id, applied.event_time, applied.recorded_at)
        rows["deliveries applied (events)"] = {
            _plain(row) for row in conn.execute(ids) if row.convention_id not in aggregated
        }
        set_aside = select(rejected_deliveries.c.category, rejected_deliveries.c.raw)
        rows["deliveries set aside"] = {_plain(row) for row in conn.execute(set_aside)}
        rows["counters"] = {_plain(row) for row in conn.execute(select(view_counters))}
    return rows


def differences(left: dict[str, set[tuple[Any, ...]]], right: dict[str, set[tuple[Any, ...]]]) -> dict[str, int]:
    """Rows in one and not the other, per table."""
    return {name: len(left.get(name, set()) ^ right.get(name, set())) for name in sorted(set(left) | set(right))}


def _plain(row: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(
        value.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(value, dt.datetime) and value.tzinfo else value
        for value in row
    )
