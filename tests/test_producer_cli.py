"""The producers' commands, run as a user runs them (typer's runner, the real broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from scolaflux.infra.settings import Settings, settings_env
from scolaflux.producers import cli
from scolaflux.producers.snapshot_sample import write_sample_pair
from scolaflux.schemas.geography import load_geography
from scolaflux.schemas.validation import parse_event
from typer.testing import CliRunner

from tests.test_producer_outage import read_all

app = typer.Typer()
cli.register(app)
runner = CliRunner()


def test_simulate_to_a_file_is_deterministic(tmp_path: Path) -> None:
    args = ["simulate", "-c", "69123", "--pupils-per-commune", "300", "--days", "20", "--seed", "4"]
    for name in ("a.bin", "b.bin"):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    data = (tmp_path / "a.bin").read_bytes()
    assert data == (tmp_path / "b.bin").read_bytes()
    with (tmp_path / "a.bin").open("rb") as file:
        frames = list(cli.read_frames(file))
    assert len(frames) > 300
    assert all(parse_event(value).pupil.ine.encode() == key for key, value in frames)
    assert f"{len(frames)} events" in result.output


@pytest.mark.broker
def test_replay_and_snapshot_import_commands_write_to_the_raw_topic(settings: Settings, topics, tmp_path: Path) -> None:
    topics()
    env = settings_env(settings)
    events = tmp_path / "events.bin"
    made = runner.invoke(
        app, ["simulate", "-c", "69266", "--pupils-per-commune", "100", "--days", "10", "--out", str(events)]
    )
    assert made.exit_code == 0, made.output
    with events.open("rb") as file:
        count = sum(1 for _ in cli.read_frames(file))
    replayed = runner.invoke(app, ["replay", str(events)], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert len(read_all(settings, settings.raw_topic)) == count

    previous, current = tmp_path / "previous.csv", tmp_path / "current.csv"
    write_sample_pair(previous, current, load_geography(["69"]), ["69"], 400, seed=2)
    imported = runner.invoke(app, ["import", "snapshot", str(previous), str(current), "--as-of", "2026-12-01"], env=env)
    assert imported.exit_code == 0, imported.output
    assert "events sent and acknowledged" in imported.output
    after_import = len(read_all(settings, settings.raw_topic))
    assert after_import > count
    again = runner.invoke(app, ["import", "snapshot", str(previous), str(current), "--as-of", "2026-12-01"], env=env)
    assert again.exit_code == 0 and "imported already" in again.output
    assert len(read_all(settings, settings.raw_topic)) == after_import


def test_a_snapshot_without_the_layout_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("INE;NOM\n", encoding="utf-8")
    env = {"SCOLAFLUX_KAFKA_BOOTSTRAP": "127.0.0.1:9", "SCOLAFLUX_DATA_DIR": str(tmp_path)}
    result = runner.invoke(app, ["import", "snapshot", str(bad), str(bad)], env=env)
    assert result.exit_code == 2
    assert "missing column(s) PRENOM, SEXE, DATE_NAISSANCE" in " ".join(result.output.split())
