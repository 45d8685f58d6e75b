"""Aggregated conventions: headcounts by school and level, suppressed under the threshold (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from hypothesis import given
from hypothesis import strategies as st
from scolaflux.infra.settings import Settings
from scolaflux.processors.aggregation import CellValue, Movement, apply_batch, apply_movement, cell_delivery
from scolaflux.processors.conventions import Convention
from scolaflux.processors.history import ConventionHistory
from scolaflux.processors.routing import ConventionIndex
from scolaflux.processors.wiring import aggregation_topic, build_pipeline, master_key
from scolaflux.schemas.codec import delivery_codec
from scolaflux.schemas.geography import load_geography

from tests.conftest import make_event

SCHOOL = "0690026D"  # Lycée du Parc, Lyon


def move(pupil: str, action: str, level: str | None, t: int, **changes) -> Movement:
    base = {
        "convention_id": "region-84-test",
        "version": 1,
        "authority_level": "region",
        "authority_code": "84",
        "threshold": 3,
        "school": SCHOOL,
        "pupil": pupil,
        "action": action,
        "level": level,
        "event_id": f"{pupil}-{t}",
        "event_ref": f"ref-{pupil}-{t}",
        "target_ref": None,
        "event_type": "enrolment",
        "event_time": t,
        "recorded_at": t,
    }
    base.update(changes)
    return Movement(**base)


def counts(cells: dict) -> dict[str, int]:
    return {key.rsplit("|", 1)[1]: n for key, n in cells.items() if n}


def test_a_cell_is_published_only_from_the_threshold_and_suppressed_below_it() -> None:
    members, cells = {}, {}
    published = [apply_movement(members, cells, move(f"p{n}", "enter", "2nde", n)) for n in range(4)]
    assert published == [[], [], [CellValue("2nde", 3)], [CellValue("2nde", 4)]]
    assert apply_movement(members, cells, move("p0", "leave", None, 10)) == [CellValue("2nde", 3)]
    assert apply_movement(members, cells, move("p1", "leave", None, 11)) == [CellValue("2nde", None)]
    assert apply_movement(members, cells, move("p2", "leave", None, 12)) == []  # still suppressed: nothing said
    assert counts(cells) == {"2nde": 1}


def test_a_movement_applied_twice_changes_nothing_but_republishes_its_cells() -> None:
    members, cells = {}, {}
    for n in range(3):
        apply_movement(members, cells, move(f"p{n}", "enter", "2nde", n))
    assert apply_movement(members, cells, move("p2", "enter", "2nde", 2)) == [CellValue("2nde", 3)]
    assert counts(cells) == {"2nde": 3}


def test_a_movement_applied_again_republishes_every_cell_its_pupil_was_counted_in() -> None:
    members, cells = {}, {}
    for n in range(4):
        apply_movement(members, cells, move(f"p{n}", "enter", "2nde", n))
    apply_movement(members, cells, move("p0", "relevel", "1re", 5, event_type="correction"))
    apply_movement(members, cells, move("p1", "leave", None, 6, event_type="transfer"))
    # their first deliveries lost: applied again, they send what they changed then, as it is now
    again = apply_movement(members, cells, move("p0", "relevel", "1re", 5, event_type="correction"))
    assert again == [CellValue("1re", None), CellValue("2nde", None)]
    assert apply_movement(members, cells, move("p1", "leave", None, 6, event_type="transfer")) == [
        CellValue("2nde", None)
    ]
    assert counts(cells) == {"2nde": 2, "1re": 1}


def test_an_older_movement_arriving_late_takes_its_place_in_event_order() -> None:
    members, cells = {}, {}
    apply_movement(members, cells, move("p0", "leave", None, 20))
    assert apply_movement(members, cells, move("p0", "enter", "2nde", 10)) == []
    assert counts(cells) == {}  # enrolled at 10, left at 20: not counted
    apply_movement(members, cells, move("p1", "relevel", "1re", 20))
    apply_movement(members, cells, move("p1", "enter", "2nde", 10))
    assert counts(cells) == {"1re": 1}  # enrolled in 2nde at 10, corrected to 1re at 20


def test_a_level_correction_moves_the_pupil_between_cells_and_an_erasure_removes_the_record_it_names() -> None:
    members, cells = {}, {}
    for n in range(3):
        apply_movement(members, cells, move(f"p{n}", "enter", "2nde", n))
    changed = apply_movement(members, cells, move("p0", "relevel", "1re", 5, event_type="correction"))
    assert changed == [CellValue("2nde", None)]  # 1re has one pupil: suppressed, and was already
    assert counts(cells) == {"2nde": 2, "1re": 1}
    assert apply_movement(members, cells, move("p1", "erase_event", None, 6, target_ref="ref-other")) == []
    apply_movement(members, cells, move("p1", "erase_event", None, 7, target_ref="ref-p1-1"))
    assert counts(cells) == {"2nde": 1, "1re": 1}
    apply_movement(members, cells, move("p3", "erase_event", None, 9, target_ref="ref-p3-8"))  # before its target
    apply_movement(members, cells, move("p3", "enter", "2nde", 8))
    assert counts(cells) == {"2nde": 1, "1re": 1}


MOVES = st.lists(
    st.builds(
        move,
        pupil=st.sampled_from(["a", "b", "c", "d"]),
        action=st.sampled_from(["enter", "leave", "relevel", "erase_event"]),
        level=st.sampled_from(["2nde", "1re", "Tle"]),
        t=st.integers(0, 40),
        target_ref=st.sampled_from([f"ref-{p}-{t}" for p in "abcd" for t in range(41)]),
    ),
    max_size=30,
    unique_by=lambda m: m.event_time,
)


@given(moves=MOVES, data=st.data())
def test_headcounts_do_not_depend_on_the_order_or_repetition_of_movements(moves, data) -> None:
    reference_members, reference = {}, {}
    for m in sorted(moves, key=lambda m: m.order):
        apply_movement(reference_members, reference, m)
    shuffled = data.draw(st.permutations(moves + moves[: len(moves) // 2]))
    members, cells = {}, {}
    for m in shuffled:
        apply_movement(members, cells, m)
    assert counts(cells) == counts(reference)


@given(moves=MOVES, data=st.data(), threshold=st.integers(1, 3), size=st.integers(1, 6))
def test_a_view_shows_every_cell_right_after_a_worker_replays_movements_whose_cells_were_lost(
    moves, data, threshold, size
) -> None:
    moves = [dataclasses.replace(m, threshold=threshold) for m in moves]
    log = data.draw(st.permutations(moves + moves[: len(moves) // 2]))  # some twice: raw events replayed
    committed, cut = sorted(data.draw(st.tuples(*[st.integers(0, len(log))] * 2)))
    members, cells, applied, shown = {}, {}, set(), {}
    clock = iter(range(1_790_000_000, 1_800_000_000))

    def send(records: list[Movement]) -> None:
        """Fold records in batches of ``size`` and deliver each batch's cells to a view, which skips a
        delivery id it has applied and keeps each cell's newest delivery by (time, id)."""
        for start in range(0, len(records), size):
            changed: dict = {}
            apply_batch(members, cells, records[start : start + size], changed)
            now = dt.datetime.fromtimestamp(next(clock), dt.UTC)
            for key, (move, cell) in changed.items():
                delivery = cell_delivery(move, cell, now)["delivery_id"]
                if delivery not in applied:
                    applied.add(delivery)
                    shown[key] = max(shown.get(key, (now, "", None)), (now, delivery, cell.count))

    send(log[:cut])  # its cells delivered, only its first movements' offsets committed
    apply_batch(members, cells, log[cut:], {})  # folded, then the worker died before its cells went out
    send(log[committed:])  # the next worker resumes at the committed offset: movements applied again
    truth = {tuple(key.split("|")): (n if n >= threshold else None) for key, n in cells.items()}
    assert {key: shown[key][2] if key in shown else None for key in truth} == truth


@given(moves=MOVES, split=st.integers(0, 30), threshold=st.integers(1, 3))
def test_a_batch_sends_each_changed_cell_once_with_its_value_after_the_batch(moves, split, threshold) -> None:
    moves = [dataclasses.replace(m, threshold=threshold) for m in moves]
    earlier, batch = moves[:split], moves[split:]  # the earlier batch is already sent
    members, cells = {}, {}
    apply_batch(members, cells, earlier, {})
    changed: dict = {}
    apply_batch(members, cells, batch, changed)

    replica_members, replica = {}, {}
    apply_batch(replica_members, replica, earlier, {})
    one_by_one: dict = {}  # what sending each change as it came would have sent
    for m in batch:
        for cell in apply_movement(replica_members, replica, m):
            one_by_one.setdefault((m.convention_id, m.school, cell.level), []).append((m, cell))
    assert changed.keys() == one_by_one.keys()
    for (convention, school, level), last in changed.items():
        assert last == one_by_one[convention, school, level][-1]
        count = cells.get(f"{convention}|{school}|{level}", 0)
        assert last[1] == CellValue(level, count if count >= threshold else None)  # the cell after the batch


def test_the_pipeline_counts_lycee_enrolments_under_an_aggregated_convention_without_the_ine() -> None:
    convention = Convention.model_validate(
        {
            "id": "region-84-test",
            "version": 1,
            "academy": "10",
            "authority": {"level": "region", "code": "84"},
            "legal_basis": [{"article": "L214-6", "text": "…"}],
            "purposes": ["headcounts"],
            "signed": dt.date(2026, 6, 1),
            "valid_from": dt.date(2026, 7, 1),
            "valid_until": dt.date(2027, 8, 31),
            "status": "signed",
            "population": {"basis": "schooling", "school_kinds": ["lycee"]},
            "events": {"enrolment": ["school", "level"], "transfer": ["school", "level"]},
            "identity": "aggregated",
            "aggregation": {"threshold": 2},
            "retention_days": 365,
        }
    )
    settings = Settings(topic_prefix="agg", kafka_bootstrap="unused:9092")
    index = ConventionIndex.build([ConventionHistory.first(convention)], master_key(settings))
    pipeline = build_pipeline(settings, load_geography(["69"]), index)
    members, cells = {}, {}
    deliveries = []
    for n in range(3):
        event = make_event("enrolment", ine=f"{n:09d}AB", school=SCHOOL, event_id=uuid.uuid4())
        outputs = pipeline.route(event)
        assert {o.topic for o in outputs} == {aggregation_topic(settings), settings.audit_topic}
        for output in outputs:
            assert event.pupil.ine.encode() not in output.value
            if output.topic == aggregation_topic(settings):
                m = Movement.from_bytes(output.value)
                for cell in apply_movement(members, cells, m):
                    deliveries.append(delivery_codec().decode(delivery_codec().encode(cell_delivery(m, cell, now()))))
    assert [d["aggregate"] for d in deliveries] == [
        {"school": SCHOOL, "level": "2nde", "count": 2, "suppressed": False},
        {"school": SCHOOL, "level": "2nde", "count": 3, "suppressed": False},
    ]
    assert all(d["subject"] is None and d["identity_treatment"] == "aggregated" for d in deliveries)
    assert len({d["delivery_id"] for d in deliveries}) == 2


def now() -> dt.datetime:
    return dt.datetime(2026, 9, 2, tzinfo=dt.UTC)
