"""The one place where the Kafka security settings become each client family's arguments.

Every client the project builds takes its security from here: kafka-python (views, admin, lag),
aiokafka and faust (the processor), confluent-kafka (event producers). The password is handed to
the client library only; it is never logged nor put in an error message.
"""

from __future__ import annotations

import ssl
from typing import Any

from .settings import Settings


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    return ssl.create_default_context(cafile=cafile)


def _sasl(settings: Settings) -> tuple[str, str] | None:
    if not settings.kafka_security_protocol.startswith("SASL_"):
        return None
    assert settings.kafka_sasl_username and settings.kafka_sasl_password  # checked by Settings
    return settings.kafka_sasl_username, settings.kafka_sasl_password.get_secret_value()


def kafka_python_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of kafka-python's ``KafkaConsumer``/``KafkaProducer``/``KafkaAdminClient``."""
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if (sasl := _sasl(settings)) is not None:
        config |= {"sasl_mechanism": settings.kafka_sasl_mechanism}
        config |= {"sasl_plain_username": sasl[0], "sasl_plain_password": sasl[1]}
    if settings.kafka_ssl_cafile is not None:  # only with SSL (checked by Settings)
        config["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return config


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of aiokafka's ``AIOKafkaConsumer``/``AIOKafkaProducer``."""
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if (sasl := _sasl(settings)) is not None:
        config |= {"sasl_mechanism": settings.kafka_sasl_mechanism}
        config |= {"sasl_plain_username": sasl[0], "sasl_plain_password": sasl[1]}
    if (context := _ssl_context(settings)) is not None:
        config["ssl_context"] = context
    return config


def librdkafka_security(settings: Settings) -> dict[str, Any]:
    """Dotted settings of confluent-kafka's ``Producer``/``Consumer``/``AdminClient``."""
    config: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol.lower()}
    if (sasl := _sasl(settings)) is not None:
        config |= {"sasl.mechanism": settings.kafka_sasl_mechanism}
        config |= {"sasl.username": sasl[0], "sasl.password": sasl[1]}
    if settings.kafka_ssl_cafile is not None:
        config["ssl.ca.location"] = str(settings.kafka_ssl_cafile)
    return config


def faust_credentials(settings: Settings) -> Any:
    """The ``broker_credentials`` of a faust app (``None``: plaintext)."""
    import faust

    context = _ssl_context(settings)
    if (sasl := _sasl(settings)) is not None:
        return faust.SASLCredentials(
            username=sasl[0], password=sasl[1], ssl_context=context, mechanism=settings.kafka_sasl_mechanism
        )
    return faust.SSLCredentials(context) if context is not None else None
