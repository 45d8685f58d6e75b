"""Headcounts of one aggregated convention folded as a worker folds them, measured in a process of its own.

``python -m scolaflux.infra.bench.headcounts N DIR [--in-memory]`` folds N enrolments (a région's
lycéens: pupils spread over 1,000 lycées and their three levels) as a worker owning one partition
would, into its state file in DIR (``HeadcountState``: a transaction per batch of ``MAX_RECORDS``,
folded in chunks of ``YIELD_EVERY``), or with ``--in-memory`` into dicts (the pure fold, as the
worker kept them before the file); prints the CPU seconds and, for the file, its size and how long
a worker taking the partition takes to find where to resume. The benchmark runs it
with ``workers.run_measured`` for the peak memory.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...processors.aggregation import Movement, apply_batch
from ...processors.app import MAX_RECORDS, YIELD_EVERY
from ...processors.headcount_state import HeadcountState

SCHOOLS = 1_000
LEVELS = ("2nde", "1re", "Tle")
START_MS = 1_788_220_800_000  # 1 September 2026


@dataclass(frozen=True, slots=True)
class Logged:
    """A movement as read from the aggregation topic."""

    offset: int
    key: bytes
    value: bytes
    timestamp: int


def movements(start: int, stop: int) -> list[Logged]:
    """The enrolments of pupils ``start`` to ``stop`` (distinct pseudonyms as long as the pipeline's),
    at those offsets: made a chunk at a time, so that the input does not weigh on the peak memory."""
    records = []
    for n in range(start, stop):
        move = Movement(
            convention_id="bench-region-84-effectifs",
            version=1,
            authority_level="region",
            authority_code="84",
            threshold=10,
            school=f"{690_000 + n % SCHOOLS:07d}A",
            pupil=f"{n:064x}",
            action="enter",
            level=LEVELS[n // SCHOOLS % len(LEVELS)],
            event_id=f"{n:032x}",
            event_ref=f"{n:064x}",
            target_ref=None,
            event_type="enrolment",
            event_time=START_MS + n,
            recorded_at=START_MS + n,
        )
        records.append(Logged(n, move.partition_key, move.to_bytes(), START_MS + n))
    return records


def batches(count: int) -> Iterator[list[list[Logged]]]:
    """``count`` movements in a worker's batches, each in its chunks, made a batch at a time."""
    for start in range(0, count, MAX_RECORDS):
        stop = min(start + MAX_RECORDS, count)
        yield [movements(n, min(n + YIELD_EVERY, stop)) for n in range(start, stop, YIELD_EVERY)]


def fold(count: int, folder: Path, in_memory: bool) -> dict[str, float]:
    """Fold ``count`` movements; the CPU seconds the folds took (making the movements not counted),
    and what the file holds."""
    path = folder / "headcounts.sqlite"
    path.unlink(missing_ok=True)
    state = None if in_memory else HeadcountState(path)
    members: dict[str, object] = {}
    counts: dict[str, object] = {}
    cpu = 0.0
    for batch in batches(count):
        started = time.process_time()
        if state is None:
            for chunk in batch:
                apply_batch(members, counts, [Movement.from_bytes(r.value) for r in chunk], {})
        else:
            with state.transaction():
                for chunk in batch:
                    state.fold(chunk, {})
        cpu += time.process_time() - started
    if state is None:
        return {"cpu_seconds": cpu}
    state.close()
    opened = time.perf_counter()
    state = HeadcountState(path)
    resumes = state.follows(batch[-1][-1]) and state.next_offset == count
    resume_seconds = time.perf_counter() - opened
    state.close()
    if not resumes:
        raise RuntimeError("the state file does not resume after its last movement")
    return {"cpu_seconds": cpu, "file_bytes": path.stat().st_size, "resume_seconds": resume_seconds}


if __name__ == "__main__":
    count, folder = int(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(fold(count, folder, "--in-memory" in sys.argv[3:])))
