"""The Burrow-style verdicts and the status report, on sample windows (pure: no broker)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest
from scolaflux.infra.burrow import Sample, Status, evaluate_group, evaluate_partition, worst
from scolaflux.infra.lag import Target, find_targets, role_of, watched_groups
from scolaflux.infra.metrics import Metrics
from scolaflux.infra.settings import Settings
from scolaflux.infra.status import RejectReport, build_report, export


def window(*points: tuple[int, int], start: float = 1000.0, step: float = 1.0) -> list[Sample]:
    """Samples from (committed, end) pairs, one a ``step`` apart."""
    return [Sample(start + i * step, committed, end) for i, (committed, end) in enumerate(points)]


@pytest.mark.parametrize(
    ("points", "members", "expected"),
    [
        pytest.param([(10, 10), (20, 20), (30, 30)], None, Status.OK, id="caught up"),
        pytest.param([(10, 15), (20, 25), (30, 30)], None, Status.OK, id="caught up now"),
        pytest.param([(10, 10), (10, 12), (10, 14)], None, Status.OK, id="lag appeared within the window"),
        pytest.param([(10, 15), (20, 22), (30, 31)], None, Status.OK, id="lag decreasing"),
        pytest.param([(10, 15), (20, 30), (25, 28), (30, 40)], None, Status.OK, id="lag went down once"),
        pytest.param([(10, 15), (20, 30), (30, 45)], None, Status.WARNING, id="offsets move, lag grows"),
        pytest.param([(10, 15), (20, 25), (30, 35)], None, Status.WARNING, id="offsets move, lag fixed"),
        pytest.param([(10, 15), (10, 20), (10, 25)], None, Status.STOPPED, id="no progress, nobody there"),
        pytest.param([(10, 15), (10, 15), (10, 15)], None, Status.STOPPED, id="no progress, fixed lag"),
        pytest.param([(10, 15), (10, 20), (10, 25)], False, Status.STOPPED, id="no progress, no member"),
        pytest.param([(10, 15), (10, 20), (10, 25)], True, Status.STALLED, id="no progress, members alive"),
        pytest.param([(10, 15), (20, 25), (5, 25)], None, Status.REWIND, id="offset went back"),
        pytest.param([(10, 15)], None, Status.ERROR, id="one sample cannot show a trend"),
        pytest.param([(10, 10)], None, Status.OK, id="one sample, caught up"),
        pytest.param([], None, Status.ERROR, id="no sample"),
    ],
)
def test_partition_verdicts_follow_burrows_rules(
    points: list[tuple[int, int]], members: bool | None, expected: Status
) -> None:
    assert evaluate_partition(window(*points), members) is expected


def test_a_group_is_as_bad_as_its_worst_partition() -> None:
    windows = {
        0: window((10, 10), (20, 20)),
        1: window((10, 15), (20, 30), (30, 45)),
        2: window((10, 15), (10, 20), (10, 25)),
    }
    assert evaluate_group(windows) is Status.STOPPED
    assert evaluate_group({0: windows[0], 1: windows[1]}) is Status.WARNING
    assert worst([]) is Status.OK and Status.OK.healthy and not Status.WARNING.healthy


def test_lag_in_seconds_is_the_age_of_the_oldest_unconsumed_record() -> None:
    assert Sample(1000.0, 10, 10).lag_seconds == 0.0
    assert Sample(1000.0, 10, 15, oldest_unconsumed=990.0).lag_seconds == 10.0
    assert Sample(1000.0, 10, 15).lag_seconds is None  # lag, but the record could not be read
    assert Sample(1000.0, 12, 10).lag == 0  # a commit ahead of a stale log end is no lag


SETTINGS = Settings(topic_prefix="sf", kafka_bootstrap="127.0.0.1:1")


def test_targets_are_the_deployments_groups_on_the_topics_they_commit_on() -> None:
    groups = ["sf-processor", "sf-view-commune:69123", "sf-view-region:84", "other-app", "sfx-processor"]
    watched = watched_groups(SETTINGS, groups)
    assert watched == ["sf-processor", "sf-view-commune:69123", "sf-view-region:84"]
    topics = ["sf.events", "sf.deadletter", "sf.delivery.c1", "sf.delivery.c2", "sf.delivery.c3", "elsewhere"]
    commits = {
        "sf-processor": {"sf.events"},
        "sf-view-commune:69123": {"sf.delivery.c1"},
        "sf-view-region:84": {"sf.delivery.c2"},
    }
    targets, unconsumed = find_targets(SETTINGS, topics, commits)
    assert targets == [
        Target("sf-processor", "sf.events", "processor"),
        Target("sf-view-commune:69123", "sf.delivery.c1", "view", "commune:69123"),
        Target("sf-view-region:84", "sf.delivery.c2", "view", "region:84"),
    ]
    assert unconsumed == ["sf.delivery.c3"]
    assert role_of(SETTINGS, SETTINGS.view_group_id("departement:69")) == ("view", "departement:69")
    assert role_of(SETTINGS, SETTINGS.processor_group_id) == ("processor", None)


def test_the_report_gives_rates_freshness_and_an_overall_verdict() -> None:
    processor = Target("sf-processor", "sf.events", "processor")
    lyon = Target("sf-view-commune:69123", "sf.delivery.c1", "view", "commune:69123")
    windows = {
        processor: {0: window((0, 10), (10, 20), (20, 20), step=2.0), 1: window((0, 0), (0, 0), (0, 0), step=2.0)},
        lyon: {
            0: [
                Sample(1000.0, 0, 10, oldest_unconsumed=995.0),
                Sample(1002.0, 0, 20, oldest_unconsumed=995.0),
                Sample(1004.0, 0, 30, oldest_unconsumed=995.0),
            ]
        },
    }
    report = build_report(windows, {}, RejectReport(total=3, in_window=1, per_second=0.25, reasons={"decode": 1}))
    assert [g.group for g in report.groups] == ["sf-processor", "sf-view-commune:69123"]
    proc, view = report.groups
    assert proc.status == "OK" and proc.produced_per_second == 2.5 and proc.consumed_per_second == 5.0
    assert view.status == "STOPPED" and view.lag == 30 and view.lag_seconds == 9.0
    (authority,) = report.authorities
    assert (authority.authority, authority.freshness_seconds, authority.status) == ("commune:69123", 9.0, "STOPPED")
    assert not report.ok
    assert report.window_seconds == 4.0 and report.samples == 3
    document = json.loads(json.dumps(report.to_json()))
    assert document["ok"] is False and document["rejects"]["reasons"] == {"decode": 1}

    healthy = build_report({processor: windows[processor]}, {}, RejectReport(0, 0, 0.0))
    assert healthy.ok
    assert not build_report({}, {}, RejectReport(0, 0, 0.0), missing_groups=["sf-processor"]).ok


def test_the_monitor_exports_the_report_as_gauges() -> None:
    lyon = Target("sf-view-commune:69123", "sf.delivery.c1", "view", "commune:69123")
    samples = [Sample(1000.0 + i, 0, 10 * (i + 1), oldest_unconsumed=990.0) for i in range(3)]
    report = build_report({lyon: {0: samples}}, {}, RejectReport(0, 0, 0.0))
    metrics = Metrics()
    export(report, metrics)
    text = generate_latest(metrics.registry).decode()
    group = 'group="sf-view-commune:69123"'
    assert f'scolaflux_consumer_group_status{{{group},status="STOPPED"}} 1.0' in text
    assert f'scolaflux_consumer_group_status{{{group},status="OK"}} 0.0' in text
    assert f'scolaflux_consumer_lag_records{{{group},partition="0",topic="sf.delivery.c1"}} 30.0' in text
    assert f'scolaflux_consumer_lag_seconds{{{group},partition="0",topic="sf.delivery.c1"}} 12.0' in text
    assert 'scolaflux_view_freshness_seconds{authority="commune:69123"} 12.0' in text
