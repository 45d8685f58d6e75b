"""Kafka client security: the settings, their mapping per client family, and a broker that requires SASL.

The embedded broker (Tansu 0.6.0) started with ``--authentication`` knows no user (users cannot be
created on it, see the README "Security"): a client with SASL settings runs the SCRAM exchange and
is refused as an unknown user, a plaintext client is cut off before any request past ApiVersions.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import certifi
import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from confluent_kafka import KafkaError, Producer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka.errors import KafkaError as KafkaPythonError
from pydantic import ValidationError
from scolaflux.infra.broker import EmbeddedBroker
from scolaflux.infra.kafka import make_admin
from scolaflux.infra.kafka_auth import (
    aiokafka_security,
    faust_credentials,
    kafka_python_security,
    librdkafka_security,
)
from scolaflux.infra.settings import Settings, settings_env
from scolaflux.processors.live import LiveConventions
from scolaflux.producers.kafka import producer_config

PASSWORD = "s3cr3t-never-logged"  # noqa: S105 (a test value)
SASL = {
    "kafka_bootstrap": "kafka:9093",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "scolaflux-processor",
    "kafka_sasl_password": PASSWORD,
}


def sasl_settings(**update: object) -> Settings:
    return Settings(**{**SASL, **update})


# -- settings ---------------------------------------------------------------------------------


def test_plaintext_is_the_default_and_maps_to_plaintext_everywhere() -> None:
    settings = Settings(kafka_bootstrap="kafka:9092")
    assert kafka_python_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert aiokafka_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert librdkafka_security(settings) == {"security.protocol": "plaintext"}
    assert faust_credentials(settings) is None


@pytest.mark.parametrize("missing", ["kafka_sasl_username", "kafka_sasl_password"])
def test_sasl_without_username_or_password_names_the_field_and_the_rule(missing: str) -> None:
    with pytest.raises(ValidationError) as raised:
        sasl_settings(**{missing: None})
    message = str(raised.value)
    assert f"SCOLAFLUX_{missing.upper()} is required when SCOLAFLUX_KAFKA_SECURITY_PROTOCOL is SASL_SSL" in message
    assert PASSWORD not in message


def test_credentials_without_sasl_and_a_ca_file_without_tls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only used with SCOLAFLUX_KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT"):
        sasl_settings(kafka_security_protocol="PLAINTEXT")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    with pytest.raises(ValidationError, match="SCOLAFLUX_KAFKA_SSL_CAFILE is only used with .* SSL or SASL_SSL"):
        sasl_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_cafile=ca)
    with pytest.raises(ValidationError, match="SCOLAFLUX_KAFKA_SSL_CAFILE: no such file"):
        sasl_settings(kafka_ssl_cafile=tmp_path / "absent.pem")
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        Settings(kafka_security_protocol="SASL")


def test_settings_read_from_the_environment_and_never_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SASL.items():
        monkeypatch.setenv(f"SCOLAFLUX_{name.upper()}", value)
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert settings_env(settings)["SCOLAFLUX_KAFKA_SASL_PASSWORD"] == PASSWORD  # child processes get it


# -- mapping per client family ------------------------------------------------------------------


def test_sasl_ssl_maps_to_each_client_family() -> None:
    ca = Path(certifi.where())  # a real PEM bundle stands for the cluster's CA
    settings = sasl_settings(kafka_ssl_cafile=ca)

    assert kafka_python_security(settings) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "scolaflux-processor",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": str(ca),
    }
    assert librdkafka_security(settings) == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "scolaflux-processor",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(ca),
    }
    aio = aiokafka_security(settings)
    context = aio.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert aio == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "scolaflux-processor",
        "sasl_plain_password": PASSWORD,
    }
    # faust hands its credentials to aiokafka through its own translation: the same arguments come out
    faust_aio = dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
    assert isinstance(faust_aio.pop("ssl_context"), ssl.SSLContext)
    assert faust_aio == aio


def test_sasl_plaintext_and_ssl_only_map_without_the_other_half() -> None:
    settings = sasl_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256")
    assert "ssl_context" not in aiokafka_security(settings)
    assert librdkafka_security(settings)["security.protocol"] == "sasl_plaintext"
    credentials = faust_credentials(settings)
    assert dict(credentials_to_aiokafka_auth(credentials)) == {**aiokafka_security(settings), "ssl_context": None}

    tls = Settings(kafka_bootstrap="kafka:9093", kafka_security_protocol="SSL")
    assert kafka_python_security(tls) == {"security_protocol": "SSL"}
    assert librdkafka_security(tls) == {"security.protocol": "ssl"}
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    assert dict(credentials_to_aiokafka_auth(faust_credentials(tls)))["security_protocol"] == "SSL"


def test_the_event_producer_takes_the_security_settings() -> None:
    config = producer_config(sasl_settings())
    assert config["security.protocol"] == "sasl_ssl" and config["sasl.username"] == "scolaflux-processor"


def test_the_processor_app_takes_the_security_settings() -> None:
    from scolaflux.processors.app import create_app
    from scolaflux.processors.routing import ConventionIndex
    from scolaflux.processors.wiring import build_pipeline, master_key
    from scolaflux.schemas.geography import load_geography

    settings = sasl_settings()
    conventions = LiveConventions("kafka:9092", settings.conventions_topic, master_key(settings))
    conventions.index = ConventionIndex.build([], master_key(settings))
    app = create_app(settings, build_pipeline(settings, load_geography(["69"]), conventions), conventions)
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "scolaflux-processor"


# -- a broker that requires SASL ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedBroker:
    with EmbeddedBroker(tmp_path_factory.mktemp("sasl") / "broker.log", authentication=True) as broker:
        yield broker


def on(broker: EmbeddedBroker, sasl: bool) -> Settings:
    if not sasl:
        return Settings(kafka_bootstrap=broker.bootstrap)
    return sasl_settings(
        kafka_bootstrap=broker.bootstrap, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256"
    )


def librdkafka_errors(settings: Settings, timeout: float = 15.0) -> list[KafkaError]:
    """The errors the project's event-producer config meets on connecting (until one is fatal for it)."""
    errors: list[KafkaError] = []
    producer = Producer({**producer_config(settings), "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not any(e.code() in (KafkaError._AUTHENTICATION, KafkaError._ALL_BROKERS_DOWN) for e in errors):
        if time.monotonic() > deadline:
            break
        producer.poll(0.2)
    return errors


@pytest.mark.broker
def test_confluent_kafka_runs_scram_and_is_refused_as_an_unknown_user(sasl_broker: EmbeddedBroker) -> None:
    refused = librdkafka_errors(on(sasl_broker, sasl=True))
    authentication = [e for e in refused if e.code() == KafkaError._AUTHENTICATION]
    assert authentication, refused
    assert "SASL SCRAM authentication failed: broker responded with unknown-user" in authentication[0].str()
    assert all(PASSWORD not in e.str() for e in refused)

    plaintext = librdkafka_errors(on(sasl_broker, sasl=False))
    assert plaintext and not any(e.code() == KafkaError._AUTHENTICATION for e in plaintext)
    assert any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in plaintext)  # cut off, never authenticated


@pytest.mark.broker
def test_aiokafka_runs_scram_and_is_refused_while_plaintext_is_cut_off(sasl_broker: EmbeddedBroker) -> None:
    """The processor's conventions reader (aiokafka), built with the settings' security.

    aiokafka 0.14 does not read the ``e=unknown-user`` of the SCRAM server-final message: it fails on
    the missing ``v=`` verifier (KeyError 'v') -- after the exchange, unlike a plaintext client, which
    the broker disconnects before its first metadata request.
    """

    async def start(settings: Settings) -> None:
        reader = LiveConventions(
            settings.kafka_bootstrap or "", settings.conventions_topic, b"k", security=aiokafka_security(settings)
        )
        try:
            await reader.start()
        finally:
            await reader.stop()

    with pytest.raises(KeyError, match="'v'"):
        asyncio.run(start(on(sasl_broker, sasl=True)))
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        asyncio.run(start(on(sasl_broker, sasl=False)))


@pytest.mark.broker
def test_kafka_python_runs_scram_and_is_refused_while_plaintext_is_cut_off(
    sasl_broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The admin client of ``ensure_topics`` (kafka-python): the SASL one runs the SCRAM exchange and,
    like aiokafka, fails on the server-final message without ``v=``; the plaintext one is disconnected."""
    with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(KafkaPythonError):
        make_admin(on(sasl_broker, sasl=True), request_timeout_ms=3_000, api_version_auto_timeout_ms=3_000)
    assert any(r.name == "kafka.sasl.scram" for r in caplog.records)
    assert "Closing connection. 'v'" in caplog.text
    assert PASSWORD not in caplog.text
    caplog.clear()

    with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(KafkaPythonError):
        make_admin(on(sasl_broker, sasl=False), request_timeout_ms=3_000, api_version_auto_timeout_ms=3_000)
    assert not any(r.name.startswith("kafka.sasl") for r in caplog.records)
    assert "socket disconnected" in caplog.text and "Closing connection. 'v'" not in caplog.text
