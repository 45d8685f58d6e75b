"""The metrics object and the health endpoints of a process (a real HTTP server on a free port)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scolaflux.infra.health import Flag, Health, Heartbeat, serve
from scolaflux.infra.metrics import GROUP_STATUSES, REDACTED, Metrics, safe_label, sample_names

ALLOWED_LABELS = {"topic", "event_type", "stage", "reason", "convention", "authority", "group", "partition", "status"}


def exercised() -> Metrics:
    """A metrics object after one call of every method."""
    metrics = Metrics()
    metrics.event_consumed("scolaflux.events", 3)
    metrics.event_produced("scolaflux.events", "enrolment", 2)
    metrics.rejected("view", "invalid")
    metrics.dead_lettered("processor", "decode", 2)
    metrics.delivered("commune-69123-instruction", 4)
    metrics.view_applied("commune:69123", 2, [0.02, 1.5])
    metrics.rebalanced("scolaflux-processor")
    metrics.view_freshness("commune:69123", 12.5)
    metrics.consumer_lag("scolaflux-view-commune:69123", "scolaflux.delivery.c", 0, 40, 12.5)
    metrics.group_status("scolaflux-view-commune:69123", "WARNING")
    stages = [("conventions", 0.002), ("pipeline", 0.2), ("acknowledgements", 0.01), ("commit", 0)]
    metrics.processor_batch(0.03, stages)
    return metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_method_counts_under_prometheus_names() -> None:
    values = samples(exercised())
    assert values[("scolaflux_events_consumed_total", (("topic", "scolaflux.events"),))] == 3
    assert (
        values[("scolaflux_events_produced_total", (("event_type", "enrolment"), ("topic", "scolaflux.events")))] == 2
    )
    assert values[("scolaflux_rejects_total", (("reason", "decode"), ("stage", "processor")))] == 2
    assert values[("scolaflux_rejects_total", (("reason", "invalid"), ("stage", "view")))] == 1
    assert values[("scolaflux_deadletter_records_total", (("reason", "decode"),))] == 2
    assert values[("scolaflux_deliveries_total", (("convention", "commune-69123-instruction"),))] == 4
    authority = (("authority", "commune:69123"),)
    assert values[("scolaflux_view_deliveries_applied_total", authority)] == 2
    assert values[("scolaflux_end_to_end_latency_seconds_count", authority)] == 2
    assert values[("scolaflux_end_to_end_latency_seconds_bucket", (*authority, ("le", "0.025")))] == 1
    assert values[("scolaflux_view_last_update_timestamp_seconds", authority)] > 1.7e9
    assert values[("scolaflux_view_freshness_seconds", authority)] == 12.5
    group = ("group", "scolaflux-view-commune:69123")
    lag = (group, ("partition", "0"), ("topic", "scolaflux.delivery.c"))
    assert values[("scolaflux_consumer_lag_records", lag)] == 40
    assert values[("scolaflux_consumer_lag_seconds", lag)] == 12.5
    assert values[("scolaflux_consumer_group_status", (group, ("status", "WARNING")))] == 1
    assert sum(values[("scolaflux_consumer_group_status", (group, ("status", s)))] for s in GROUP_STATUSES) == 1
    assert values[("scolaflux_rebalances_total", (("group", "scolaflux-processor"),))] == 1
    assert values[("scolaflux_processor_fetched_age_seconds_bucket", (("le", "0.025"),))] == 0
    assert values[("scolaflux_processor_fetched_age_seconds_bucket", (("le", "0.05"),))] == 1
    assert values[("scolaflux_processor_batch_stage_seconds_sum", (("stage", "pipeline"),))] == 0.2
    assert values[("scolaflux_processor_batch_stage_seconds_count", (("stage", "commit"),))] == 1


def test_names_follow_the_conventions_and_labels_never_name_a_pupil() -> None:
    metrics = exercised()
    for family in metrics.registry.collect():
        assert family.name.startswith("scolaflux_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= ALLOWED_LABELS
    assert "scolaflux_end_to_end_latency_seconds_bucket" in sample_names(metrics.registry)


@pytest.mark.parametrize("ine", ["123456789AB", "1234567890A", "1234A56789B", "070803608jj"])
def test_a_label_shaped_like_an_ine_is_redacted(ine: str) -> None:
    assert safe_label(ine) == REDACTED
    assert safe_label(f"scolaflux.delivery.{ine}") == REDACTED
    metrics = Metrics()
    metrics.delivered(f"convention-{ine}")
    text = generate_latest(metrics.registry).decode()
    assert ine not in text and ine.upper() not in text and REDACTED in text


@pytest.mark.parametrize(
    "label",
    ["commune:69123", "scolaflux.delivery.commune-69123-instruction", "t0a6b083876f7-view-region:84", "0690026D"],
)
def test_ordinary_labels_are_kept(label: str) -> None:
    assert safe_label(label) == label


def test_an_unknown_processor_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="processor stage must be one of"):
        Metrics().processor_batch(None, [("sending", 0.1)])


def test_an_unknown_verdict_is_refused() -> None:
    with pytest.raises(ValueError, match="group status must be one of"):
        Metrics().group_status("g", "FINE")


@pytest.fixture
def endpoints() -> Iterator[tuple[str, Flag, dict[str, bool]]]:
    metrics = exercised()
    ready, switches = Flag(), {"loop": True}
    health = Health(
        liveness={"loop": lambda: switches["loop"], "heartbeat": Heartbeat(max_age=60)},
        readiness={"assigned": ready, "broken": lambda: switches.get("broken", True) or 1 / 0},
    )
    running = serve(metrics, health)
    yield f"http://127.0.0.1:{running.port}", ready, switches
    running.close()


def test_health_endpoints_answer_liveness_readiness_and_metrics(endpoints: tuple[str, Flag, dict[str, bool]]) -> None:
    base, ready, switches = endpoints
    with httpx.Client(base_url=base, timeout=5) as http:
        assert http.get("/livez").status_code == 200
        not_ready = http.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {
            "ok": False,
            "checks": {"loop": True, "heartbeat": True, "assigned": False, "broken": True},
        }
        ready.set()
        assert http.get("/readyz").status_code == 200
        switches["broken"] = False  # the check now raises: it fails, the endpoint still answers
        assert json.loads(http.get("/readyz").text)["checks"]["broken"] is False
        switches.pop("broken")
        switches["loop"] = False
        assert http.get("/livez").status_code == 503
        assert http.get("/readyz").status_code == 503, "a process that is not live is not ready"
        scrape = http.get("/metrics")
        assert scrape.status_code == 200 and "scolaflux_deliveries_total" in scrape.text
        assert http.get("/nowhere").status_code == 404


def test_a_heartbeat_goes_stale() -> None:
    heartbeat = Heartbeat(max_age=0.0)
    heartbeat._last -= 1  # as if the loop last turned a second ago
    assert not heartbeat()
    heartbeat.beat()
    heartbeat.max_age = 60
    assert heartbeat()
