"""infra/compose/docker-compose.yml cannot run here (no container engine, no Kafka distribution):
parse it and check it against the code: settings names, CLI commands, conventions, the KRaft
quorum, ports, and the Prometheus and Grafana files it mounts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from scolaflux.infra.cli import app
from scolaflux.infra.kafka import pipeline_topics
from scolaflux.infra.settings import Settings
from scolaflux.processors.wiring import processor_topics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "infra" / "compose"
PROMETHEUS = ROOT / "infra" / "prometheus" / "prometheus.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def services(compose: dict[str, Any], image_prefix: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith(image_prefix)}


def resolve(group: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The CLI command that ``words`` runs, and the words left for its options and arguments."""
    while hasattr(group, "commands") and words and words[0] in group.commands:
        group, words = group.commands[words[0]], words[1:]
    return group, words


def test_every_scolaflux_setting_in_the_compose_file_is_a_settings_field(compose: dict[str, Any]) -> None:
    fields = {f"SCOLAFLUX_{name.upper()}" for name in Settings.model_fields}
    scolaflux = services(compose, "scolaflux")
    assert {"processor", "monitor", "simulator", "view-commune-69123", "conventions"} <= set(scolaflux)
    for name, service in scolaflux.items():
        env = service["environment"]
        unknown = {key for key in env if key.startswith("SCOLAFLUX_")} - fields
        assert not unknown, f"{name}: {unknown} are not fields of Settings"
        values = {k: re.sub(r"\$\{[^}]*\}", "x", str(v)) for k, v in env.items()}
        settings = Settings.model_validate(
            {k.removeprefix("SCOLAFLUX_").lower(): v for k, v in values.items()},
        )
        assert settings.topic_prefix == Settings().topic_prefix == "scolaflux"
        assert settings.raw_topic == "scolaflux.events" and settings.processor_group_id == "scolaflux-processor"
        assert not settings.embedded and settings.idempotent_producers
        assert settings.metrics_host == "0.0.0.0"  # noqa: S104 (inside a container, for Prometheus)


def test_the_feed_runs_on_a_three_broker_kraft_cluster(compose: dict[str, Any]) -> None:
    brokers = services(compose, "apache/kafka")
    assert len(brokers) == 3
    envs = {name: s["environment"] for name, s in brokers.items()}
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    (quorum,) = voters
    expected = ",".join(f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in sorted(envs.items()))
    assert quorum == expected, "every node votes, each under its own id and host"
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3 and int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics are created by the code, with their configs"
    env = services(compose, "scolaflux")["processor"]["environment"]
    assert sorted(env["SCOLAFLUX_KAFKA_BOOTSTRAP"].split(",")) == sorted(f"{name}:9092" for name in brokers)
    # every topic the feed creates has as many replicas as the cluster's default, more than min.insync.replicas
    replicas = int(env["SCOLAFLUX_REPLICATION_FACTOR"])
    assert replicas == 3 and all(replicas > int(e["KAFKA_MIN_INSYNC_REPLICAS"]) for e in envs.values())
    settings = Settings(kafka_bootstrap="kafka-1:9092", replication_factor=replicas)
    specs = [*pipeline_topics(settings), *processor_topics(settings)]
    assert specs and all(spec.replication == replicas for spec in specs)


def test_every_scolaflux_service_runs_a_real_command(compose: dict[str, Any]) -> None:
    root = typer.main.get_command(app)
    conventions = {
        yaml.safe_load(path.read_text())["id"]: yaml.safe_load(path.read_text())
        for path in (ROOT / "conventions").glob("*.yaml")
    }
    for name, service in services(compose, "scolaflux").items():
        command = service["command"]
        words = command if isinstance(command, list) else shlex.split(command)
        found, rest = resolve(root, list(words))
        assert not hasattr(found, "commands"), f"{name}: {words} names no command"
        context = found.make_context(found.name, list(rest), resilient_parsing=False)
        assert context.params is not None
        if words[:2] == ["view", "run"]:
            authority = context.params["authority"]
            assert name == f"view-{authority.replace(':', '-')}"
            for convention in context.params["convention"]:
                assert convention in conventions, f"{name}: no convention {convention} in conventions/"
                party = conventions[convention]["authority"]
                assert f"{party['level']}:{party['code']}" == authority, f"{convention} is not {authority}'s"


def test_prometheus_scrapes_every_process_that_serves_metrics(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                scraped[host] = int(dns["port"])
    scraped.pop("localhost")
    serving = {
        name: int(s["environment"]["SCOLAFLUX_METRICS_PORT"])
        for name, s in services(compose, "scolaflux").items()
        if s.get("healthcheck", {}).get("disable") is not True and s.get("restart") != "on-failure"
    }
    assert serving == scraped, "each long-running process is scraped on its metrics port, and only those"
    for name in serving:
        probe = " ".join(services(compose, "scolaflux")[name]["healthcheck"]["test"])
        assert f"localhost:{serving[name]}/readyz" in probe


def test_prometheus_and_grafana_mount_the_files_of_infra(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve() for v in prometheus["volumes"] if ".." in v}
    assert mounts["/etc/prometheus"] == PROMETHEUS.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve() for v in grafana["volumes"] if ".." in v}
    assert (mounts["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").is_file()
    provider = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "dashboards" / "scolaflux.yml").read_text())
    dashboards = {p["options"]["path"] for p in provider["providers"]}
    assert dashboards == {"/var/lib/grafana/dashboards"}
    assert (mounts["/var/lib/grafana/dashboards"] / "scolaflux.json").is_file()
    (source,) = yaml.safe_load((mounts["/etc/grafana/provisioning"] / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and "9090:9090" in prometheus["ports"]


def test_the_image_holds_every_package_and_the_conventions() -> None:
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    folders = set(re.findall(r'"scolaflux\.\w+" = "(\w+)"', pyproject))
    assert folders == {"schemas", "producers", "processors", "consumers", "infra"}
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, flags=re.MULTILINE))
    assert folders | {"conventions"} <= copied
