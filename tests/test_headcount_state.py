"""The headcounts on disk (one SQLite file per partition of the aggregation topic) and a worker taking
a partition: it resumes after the last movement its file holds, or rebuilds a file of another log."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st
from scolaflux.infra.kafka import TopicSpec, ensure_topics, make_producer
from scolaflux.infra.settings import Settings
from scolaflux.processors.aggregation import Movement, apply_batch
from scolaflux.processors.app import Headcounts
from scolaflux.processors.headcount_state import HeadcountState

from tests.test_routing_aggregation import MOVES, move


@dataclasses.dataclass(frozen=True)
class Logged:
    """A movement as the worker reads it from the topic."""

    offset: int
    value: bytes
    key: bytes | None = b"k"
    timestamp: int = 1_790_000_000_000


def logged(moves: list[Movement], start: int = 0) -> list[Logged]:
    return [Logged(start + n, m.to_bytes()) for n, m in enumerate(moves)]


def in_memory(moves: list[Movement]) -> dict[str, int]:
    members: dict = {}
    counts: dict = {}
    apply_batch(members, counts, moves, {})
    return {key: n for key, n in counts.items() if n}


@given(moves=MOVES, cuts=st.lists(st.integers(0, 30), max_size=4), threshold=st.integers(1, 3))
def test_folding_chunks_into_the_file_publishes_and_counts_as_folding_them_in_memory(moves, cuts, threshold) -> None:
    moves = [dataclasses.replace(m, threshold=threshold) for m in moves]
    records = logged(moves + moves[: len(moves) // 3])  # some movements applied twice
    bounds = sorted({0, len(records), *(min(cut, len(records)) for cut in cuts)})
    members: dict = {}
    counts: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for start, end in zip(bounds, bounds[1:], strict=False):
            state = HeadcountState(Path(tmp) / "p.sqlite")  # reopened for each chunk: nothing kept in memory
            from_file: dict = {}
            state.fold(records[start:end], from_file)
            expected: dict = {}
            apply_batch(members, counts, [Movement.from_bytes(r.value) for r in records[start:end]], expected)
            assert from_file == expected
            assert state.next_offset == end
            state.close()
        state = HeadcountState(Path(tmp) / "p.sqlite")
        assert state.counts() == {key: n for key, n in counts.items() if n}
        state.close()


def test_the_file_knows_the_last_movement_it_folded_and_can_be_emptied(tmp_path: Path) -> None:
    records = logged([move(f"p{n}", "enter", "2nde", n) for n in range(5)])
    state = HeadcountState(tmp_path / "p.sqlite")
    assert state.next_offset == 0 and not state.follows(records[0])
    state.fold(records[:3], {})
    assert state.next_offset == 3
    assert state.follows(records[2])
    assert not state.follows(records[1])  # another offset
    assert not state.follows(dataclasses.replace(records[2], timestamp=records[2].timestamp + 1))  # another log
    assert not state.follows(dataclasses.replace(records[2], value=records[3].value))
    state.clear()
    assert (state.next_offset, state.counts()) == (0, {})
    state.close()


def test_two_workers_folding_the_same_movements_into_one_file_count_each_pupil_once(tmp_path: Path) -> None:
    """A worker that has not yet noticed it lost the partition and its successor, on one machine:
    each transaction reads the state afresh, and a movement applied twice changes nothing."""
    moves = [move(f"p{n % 7}", ("enter", "leave", "relevel")[n % 3], "2nde" if n % 2 else "1re", n) for n in range(60)]
    records = logged(moves)
    old, new = HeadcountState(tmp_path / "p.sqlite"), HeadcountState(tmp_path / "p.sqlite")
    for start in range(0, 60, 10):
        old.fold(records[start : start + 15], {})
        new.fold(records[max(0, start - 5) : start + 10], {})
    assert new.counts() == old.counts() == in_memory(moves)
    old.close()
    new.close()


def test_a_batch_whose_chunk_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    records = logged([move(f"p{n}", "enter", "2nde", n) for n in range(6)])
    state = HeadcountState(tmp_path / "p.sqlite")
    state.fold(records[:2], {})
    with pytest.raises(ValueError), state.transaction():  # a worker's batch, folded a chunk at a time
        state.fold(records[2:4], {})
        state.fold([*records[4:], Logged(6, b"{not a movement")], {})
    assert (state.next_offset, state.counts()) == (2, in_memory([Movement.from_bytes(r.value) for r in records[:2]]))
    with state.transaction():
        state.fold(records[2:4], {})
        state.fold(records[4:], {})
    assert (state.next_offset, state.counts()) == (6, in_memory([Movement.from_bytes(r.value) for r in records]))
    state.close()


# A worker taking a partition, against the broker.


def produce(settings: Settings, topic: str, moves: list[Movement]) -> None:
    producer = make_producer(settings)
    for m in moves:
        producer.send(topic, key=m.partition_key, value=m.to_bytes())
    producer.flush()
    producer.close()


def take(settings: Settings, topic: str, end: int) -> dict[str, int]:
    """The counts of partition 0 of ``topic`` as a worker taking it at ``end`` holds them."""

    async def run() -> dict[str, int]:
        service = Headcounts(settings, topic, None)
        state = await service._take(TopicPartition(topic, 0), end)
        try:
            return state.counts()
        finally:
            state.close()

    return asyncio.run(run())


def test_a_worker_taking_a_partition_resumes_after_its_files_last_movement(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{settings.topic_prefix}.aggregation"
    ensure_topics(settings, [TopicSpec(topic, 1, {"retention.ms": "-1"})])
    moves = [move(f"p{n}", "enter", ("2nde", "1re")[n % 2], n) for n in range(40)]
    produce(settings, topic, moves)
    assert take(settings, topic, 25) == in_memory(moves[:25])
    # a mark a rebuild from the beginning would clear: a worker resuming from the file keeps it
    path = settings.data_dir / "headcounts" / f"{topic}-0.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO counts VALUES ('mark', 1)")
    with caplog.at_level(logging.INFO, logger="scolaflux.processors.app"):
        assert take(settings, topic, 40) == {**in_memory(moves), "mark": 1}
    assert f"headcounts of {topic}/0 taken at offset 40: file up to 25, 15 movements read" in caplog.messages


def test_a_file_of_another_log_is_emptied_and_the_partition_read_from_its_beginning(settings: Settings) -> None:
    first, second = f"{settings.topic_prefix}.aggregation", f"{settings.topic_prefix}.aggregation-again"
    ensure_topics(settings, [TopicSpec(topic, 1, {"retention.ms": "-1"}) for topic in (first, second)])
    ours = [move(f"p{n}", "enter", "2nde", n) for n in range(30)]
    theirs = [move(f"q{n}", "enter", "Tle", n) for n in range(12)]
    produce(settings, first, ours)
    produce(settings, second, theirs)
    assert take(settings, first, 30) == in_memory(ours)
    # the topic deleted and made again with other movements: here, the first topic's file under the second's name
    folder = settings.data_dir / "headcounts"
    shutil.copy(folder / f"{first}-0.sqlite", folder / f"{second}-0.sqlite")
    assert take(settings, second, 12) == in_memory(theirs)  # its offset 29 is past this log's end
    produce(settings, second, [move(f"q{n}", "enter", "Tle", n) for n in range(12, 40)])
    shutil.copy(folder / f"{first}-0.sqlite", folder / f"{second}-0.sqlite")
    assert take(settings, second, 40) == in_memory(theirs + [move(f"q{n}", "enter", "Tle", n) for n in range(12, 40)])
