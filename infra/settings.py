"""The one settings model, read once at the entry point and passed down (prefix ``SCOLAFLUX_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..schemas.errors import ConfigError

DEV_PSEUDONYM_KEY = "dev-only-pseudonym-key-change-me"


class Settings(BaseSettings):
    """Every setting of every process. Inner code takes typed arguments, never ``os.environ``."""

    model_config = SettingsConfigDict(
        env_prefix="SCOLAFLUX_",
        env_nested_delimiter="__",
        frozen=True,
        hide_input_in_errors=True,  # an error must not print the inputs: they hold the secrets
    )

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port] of a Kafka cluster; unset: start the embedded Tansu broker.",
    )
    kafka_idempotence: bool | None = Field(
        default=None,
        description="Idempotent producers. Unset: on, except against the embedded broker, where starting "
        "it sets false (Tansu answers UnknownError to kafka-python's and aiokafka's idempotent produce).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="PLAINTEXT",
        description="How every Kafka client of the project connects: SASL_SSL on a production cluster, so that "
        "each process presents its own principal (see `scolaflux conventions acl`).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = Field(default=None, description="SASL user of this process (its ACL principal).")
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA that signed the brokers' certificates; unset: the system's CAs."
    )
    topic_prefix: str = "scolaflux"
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of every topic the feed creates: 1 on the embedded broker, 3 on a production "
        "cluster (whose min.insync.replicas of 2 would refuse acks=all writes to a topic with fewer).",
    )
    partitions: int = Field(default=6, ge=1)
    delivery_partitions: int = Field(
        default=1,
        ge=1,
        description="Partitions of each convention's delivery topic. One view reads all of them, in one "
        "consumer, so more only multiply the cluster's partitions (10,000 conventions x 6 = 60,000) and "
        "the processor's batches per cycle.",
    )
    data_dir: Path = Field(
        default=Path("var"),
        description="Local files: the views' SQLite files, the processor's headcount state (a cache of the "
        "aggregation topic, rebuilt from it if lost), the snapshot ledger.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the views' database; unset: SQLite files in data_dir."
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEV_PSEUDONYM_KEY),
        description="Master key from which each convention's pseudonymisation secret is derived. Unset: a "
        "development default, refused unless on the embedded broker or with allow_dev_key.",
    )
    allow_dev_key: bool = Field(
        default=False,
        description="Accept the development pseudonym key against SCOLAFLUX_KAFKA_BOOTSTRAP: set by the "
        "launchers that start the embedded broker (demo, benchmark, tests), or by hand on a dev cluster.",
    )
    conventions_dir: Path = Path("conventions")
    ingest_sources: Path = Field(
        default=Path("ingest-sources.yaml"),
        description="The ingest endpoint's sources: id, académie, systems and token SHA-256 of each.",
    )
    view_credentials: Path | None = Field(
        default=None,
        description="JSON file of the views' hashed per-authority tokens; unset: DATA_DIR/view-credentials.json.",
    )
    view_port: int = Field(default=8040, ge=0, description="Port of the views' HTTP API and web page.")
    lost_pupil_days: int = Field(
        default=30, ge=1, description="Days after a departure with no known destination before the commune is alerted."
    )
    view_retention_days: int | None = Field(
        default=None, ge=1, description="Retention of view rows when the convention sets none; unset: kept."
    )
    metrics_port: int = Field(default=0, ge=0, description="Port of /metrics; 0 picks a free one.")
    metrics_host: str = Field(
        default="127.0.0.1", description="Address /metrics, /livez and /readyz listen on (0.0.0.0 in a container)."
    )

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not self.kafka_sasl_username:
            raise ValueError(
                f"SCOLAFLUX_KAFKA_SASL_USERNAME is required when SCOLAFLUX_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}"
            )
        if sasl and not (self.kafka_sasl_password and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(
                f"SCOLAFLUX_KAFKA_SASL_PASSWORD is required when SCOLAFLUX_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}"
            )
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(
                "SCOLAFLUX_KAFKA_SASL_USERNAME/PASSWORD are only used with SCOLAFLUX_KAFKA_SECURITY_PROTOCOL "
                f"SASL_PLAINTEXT or SASL_SSL, not {self.kafka_security_protocol}"
            )
        if self.kafka_ssl_cafile is not None and not self.kafka_security_protocol.endswith("SSL"):
            raise ValueError(
                "SCOLAFLUX_KAFKA_SSL_CAFILE is only used with SCOLAFLUX_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL, "
                f"not {self.kafka_security_protocol}"
            )
        if self.kafka_ssl_cafile is not None and not self.kafka_ssl_cafile.is_file():
            raise ValueError(f"SCOLAFLUX_KAFKA_SSL_CAFILE: no such file: {self.kafka_ssl_cafile}")
        return self

    @property
    def embedded(self) -> bool:
        """Whether the processes run against the embedded broker."""
        return self.kafka_bootstrap is None

    def master_key(self) -> bytes:
        """The master pseudonymisation key; raises ``ConfigError`` for the development default against
        a given broker, unless ``allow_dev_key``."""
        key = self.pseudonym_key.get_secret_value()
        if key == DEV_PSEUDONYM_KEY and not (self.embedded or self.allow_dev_key):
            raise ConfigError(
                "environment",
                "SCOLAFLUX_PSEUDONYM_KEY",
                "the development default key is only accepted on the embedded broker (SCOLAFLUX_KAFKA_BOOTSTRAP "
                "unset); set a secret key, or SCOLAFLUX_ALLOW_DEV_KEY=true on a development cluster",
            )
        return key.encode()

    @property
    def idempotent_producers(self) -> bool:
        """Whether producers ask for idempotence (see ``kafka_idempotence``)."""
        return True if self.kafka_idempotence is None else self.kafka_idempotence

    @property
    def raw_topic(self) -> str:
        """All source events, keyed by pupil (INE) so that one pupil's events stay in order."""
        return f"{self.topic_prefix}.events"

    @property
    def deadletter_topic(self) -> str:
        """Rejected input, with its raw bytes and the reason in headers."""
        return f"{self.topic_prefix}.deadletter"

    @property
    def audit_topic(self) -> str:
        """One record per delivery."""
        return f"{self.topic_prefix}.audit"

    @property
    def conventions_topic(self) -> str:
        """Conventions in force, compacted by convention id."""
        return f"{self.topic_prefix}.conventions"

    def delivery_topic(self, convention_id: str) -> str:
        """The delivery topic of one convention (one topic each, so a cluster can put an ACL on it)."""
        return f"{self.topic_prefix}.delivery.{convention_id}"

    @property
    def processor_group_id(self) -> str:
        """The processors' consumer group (the faust app id); the monitor watches its lag."""
        return f"{self.topic_prefix}-processor"

    @property
    def headcounts_group_id(self) -> str:
        """The group of the processor's headcounts (the aggregation topic), also its faust app id."""
        return f"{self.topic_prefix}-headcounts"

    def view_group_id(self, authority: str) -> str:
        """The group under which an authority's view commits its offsets (for lag monitoring only)."""
        return f"{self.topic_prefix}-view-{authority}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``SCOLAFLUX_*`` environment that gives a child process the same settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        plain = isinstance(value, str | Path)  # a JSON-quoted path would be read with its quotes
        env[f"SCOLAFLUX_{name.upper()}"] = str(value) if plain else json.dumps(value, default=str)
    return env
