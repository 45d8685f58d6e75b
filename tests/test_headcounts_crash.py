"""The headcounts agent after kill -9 and an immediate restart (issue #8): its faust group commits the
whole aggregation topic again once all is applied, and the headcounts equal an uninterrupted run's.

The short plan of ``tests/test_chaos.py`` (real ``scolaflux process`` workers killed with SIGKILL
and restarted at once while lycée events flow to an aggregated convention), asserting on every
topic's commits, the aggregation topic's included. Before the fix, a partition of the aggregation
topic stayed uncommitted in most runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from scolaflux.infra.chaos import ChaosPlan, run_chaos
from scolaflux.infra.settings import Settings
from scolaflux.processors.wiring import aggregation_topic

from tests.conftest import EXAMPLE_CONVENTIONS

pytestmark = pytest.mark.broker


def test_the_headcounts_group_commits_everything_again_after_kills_and_restarts(
    settings: Settings, tmp_path: Path
) -> None:
    plan = ChaosPlan(
        events=4_000,
        rounds=2,
        bad=24,
        departements=("69",),
        scale=0.005,
        authorities=("region:84",),  # the aggregated convention: lycée headcounts
        pause_seconds=0,
        takeover=False,
        recovery_timeout=150,
        quiet_seconds=15,
    )
    report = run_chaos(plan, settings, EXAMPLE_CONVENTIONS, say=print)
    print("\n".join(report.lines()))
    assert report.kills_at_work["processor-1"] >= 1
    assert report.differences == 0  # headcounts equal to an uninterrupted run's: nothing lost or counted twice
    assert {p for p in report.uncommitted if p.startswith(aggregation_topic(settings))} == set()
    assert report.uncommitted == {}
