"""The development pseudonym key is refused outside the embedded broker: a processor, backfill or
audit pointed at a cluster with SCOLAFLUX_PSEUDONYM_KEY unset stops at once and names the setting."""

from __future__ import annotations

import pytest
from scolaflux.infra.cli import app
from scolaflux.infra.settings import DEV_PSEUDONYM_KEY, Settings
from scolaflux.schemas.errors import ConfigError
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCOLAFLUX_PSEUDONYM_KEY", raising=False)


def test_the_default_key_is_refused_against_a_given_broker_and_the_error_names_the_setting() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings(kafka_bootstrap="kafka-1:9092", allow_dev_key=False).master_key()
    assert refused.value.field == "SCOLAFLUX_PSEUDONYM_KEY" and "embedded broker" in refused.value.rule
    assert DEV_PSEUDONYM_KEY not in str(refused.value)


def test_the_default_key_serves_the_embedded_broker_or_an_explicit_dev_flag_and_a_set_key_serves_anywhere() -> None:
    dev = DEV_PSEUDONYM_KEY.encode()
    assert Settings(kafka_bootstrap=None, allow_dev_key=False).master_key() == dev
    assert Settings(kafka_bootstrap="kafka-1:9092", allow_dev_key=True).master_key() == dev
    keyed = Settings(kafka_bootstrap="kafka-1:9092", allow_dev_key=False, pseudonym_key="a-real-secret")
    assert keyed.master_key() == b"a-real-secret"


@pytest.mark.parametrize(
    "args", [["process"], ["conventions", "backfill", "commune-69123-instruction"], ["audit", "pupil", "111111111AA"]]
)
def test_the_keyed_commands_stop_before_connecting(args: list[str]) -> None:
    # Nothing listens on port 1: a command that tried the broker first would fail otherwise, or hang.
    env = {"SCOLAFLUX_KAFKA_BOOTSTRAP": "127.0.0.1:1", "SCOLAFLUX_ALLOW_DEV_KEY": "false"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert "SCOLAFLUX_PSEUDONYM_KEY" in result.output and "111111111AA" not in result.output
