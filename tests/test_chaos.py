"""Faults, the short version of ``make chaos`` (``infra/chaos.py``): the processor and two views
(``scolaflux view run``) killed with SIGKILL at random moments of their work and restarted, a wave
sent in another interleaving of pupils and followed by the first wave again; after recovery every
view equals the view of an uninterrupted run of the same events, the audit as read holds one entry
per delivery of that run, the dead-letter topic exactly the bad records. The broker pause and the
two-worker takeover run in ``make chaos`` only (each costs tens of seconds of group rebalancing).

The pure helpers of the harness are tested first, without a broker."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scolaflux.infra.chaos import ChaosPlan, run_chaos
from scolaflux.infra.chaos_reference import (
    BAD_KINDS,
    bad_frames,
    encode_records,
    interleave,
    pupil_preserving_shuffle,
    simulated_records,
    waves,
)
from scolaflux.infra.settings import Settings
from scolaflux.schemas.errors import RejectedInput
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.validation import parse_event

from tests.conftest import EXAMPLE_CONVENTIONS


def test_the_bad_records_are_all_refused_distinct_and_of_every_kind() -> None:
    records = simulated_records(load_geography(), ["69"], 300, 0.002, seed=7)
    bad = bad_frames(records, 60, random.Random(1), parse_event)
    assert len(bad) == 60 and len({value for _, value in bad}) == 60
    kinds = set()
    for _, value in bad:
        with pytest.raises(RejectedInput) as refused:
            parse_event(value)
        kinds.add(refused.value.reason)
    assert kinds == {"decode", "invalid"}
    assert len(BAD_KINDS) == 6


def test_waves_reorder_pupils_but_not_a_pupils_events_and_copy_only_valid_events() -> None:
    rng = random.Random(3)
    valid = encode_records(simulated_records(load_geography(), ["69"], 800, 0.002, seed=7))
    bad = [(b"garbage", f"bad {i}".encode()) for i in range(10)]
    stream = interleave(valid, bad, rng)
    assert [f for f in stream if f not in bad] == valid and len(stream) == 810
    shuffled = pupil_preserving_shuffle(stream, rng)
    assert shuffled != stream and sorted(shuffled) == sorted(stream)
    for key in {k for k, _ in stream}:
        assert [f for f in shuffled if f[0] == key] == [f for f in stream if f[0] == key]
    planned = waves(stream, 4, frozenset(v for _, v in bad), rng, disorder=True)
    assert sum(w.fresh for w in planned) == len(stream)
    assert [f for w in planned for f in w.frames[: w.fresh]] != stream  # the second wave is reordered
    copies = [f for w in planned for f in w.frames[w.fresh :]]
    assert copies and all(f in valid for f in copies)


@pytest.mark.broker
def test_kills_duplicates_and_reordering_leave_every_view_equal_to_an_uninterrupted_run(
    settings: Settings, tmp_path: Path
) -> None:
    plan = ChaosPlan(
        events=4_000,
        rounds=2,
        bad=24,
        departements=("69",),
        scale=0.005,
        authorities=("commune:69123", "region:84"),
        pause_seconds=0,
        takeover=False,
        recovery_timeout=150,
        quiet_seconds=15,
    )
    report = run_chaos(plan, settings, EXAMPLE_CONVENTIONS, say=print)
    print("\n".join(report.lines()))
    assert report.kills == {"processor-1": 2, "view commune:69123": 2, "view region:84": 2}
    assert report.kills_at_work["processor-1"] >= 1
    assert report.copies > 0 and report.bad == 24
    assert [t.name for t in report.topics if not t.ok] == []
    assert len(report.topics) == 3 and all(t.expected > 0 for t in report.topics)
    assert report.differences == 0
    assert all(tables["rows compared"] > 300 for tables in report.views.values())
    # Both groups committed all they processed after their restarts, the headcounts' on the
    # aggregation topic included (issue 8: faust's group there used to stop committing).
    assert report.uncommitted == {}
    assert report.data_ok
