"""The Prometheus scrape config, alert rules and Grafana dashboard under infra/: valid for promtool,
the alerts fire when they should (promtool's rule unit tests), and every metric they name is one
that ``infra/metrics.py`` defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from scolaflux.infra.metrics import Metrics, sample_names

INFRA = Path(__file__).resolve().parent.parent / "infra"
PROMETHEUS = INFRA / "prometheus"
DASHBOARD = INFRA / "grafana" / "dashboards" / "scolaflux.json"

PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}
PROMETHEUS_OWN = {"up"}  # series Prometheus writes itself for every scrape target


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's ``prometheus`` package; ``make test`` installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run `make test` or `make tools` (they install Debian's prometheus package)")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=60)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names, label values, durations or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", "", text)  # offset modifiers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # groupings
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_promtool_accepts_the_alert_rules_and_the_scrape_config() -> None:
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout


def test_the_alerts_fire_when_they_should_and_not_before() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname:\s*(\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert tested == set(alert_expressions()), "every alert has a unit test"


def test_the_metric_name_parser_finds_selectors_only() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, authority) (rate(scolaflux_end_to_end_latency_seconds_bucket[5m])))"
        ' / on (authority) group_left max without (instance) (up{job="x", status=~"A|B"} offset 5m) > bool 3'
    )
    assert metric_names(expr) == {"scolaflux_end_to_end_latency_seconds_bucket", "up"}


def test_every_metric_the_alerts_and_the_dashboard_name_is_defined_in_metrics() -> None:
    defined = sample_names(Metrics().registry) | PROMETHEUS_OWN
    used_by_alerts = set().union(*(metric_names(e) for e in alert_expressions().values()))
    used_by_dashboard = set().union(*(metric_names(e) for e in dashboard_expressions()))
    assert {"scolaflux_consumer_group_status", "scolaflux_view_freshness_seconds", "up"} <= used_by_alerts
    assert not used_by_alerts - defined, f"alerts name undefined metrics: {used_by_alerts - defined}"
    assert not used_by_dashboard - defined, f"the dashboard names undefined metrics: {used_by_dashboard - defined}"


def test_the_dashboard_covers_throughput_lag_latency_rejects_and_freshness() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert {"Throughput", "Lag", "Latency", "Rejects", "Freshness"} <= rows
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    families = {f.name for f in Metrics().registry.collect()}
    shown = {family for family in families if any(name.startswith(family) for name in used)}
    assert shown == families, f"metrics no panel shows: {families - shown}"
    datasource = yaml.safe_load((INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert all(panel["datasource"]["uid"] == source["uid"] for panel in dashboard["panels"] if panel["type"] != "row")


def test_no_label_of_a_rule_or_panel_could_carry_a_pupil() -> None:
    labels = set()
    for expr in [*alert_expressions().values(), *dashboard_expressions()]:
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            labels.update(name.strip() for name in grouping.split(","))
    assert labels <= {
        "group",
        "topic",
        "partition",
        "authority",
        "convention",
        "stage",
        "reason",
        "status",
        "le",
        "event_type",
    }
    assert labels.isdisjoint({"ine", "pupil", "name", "last_name", "first_name"})
