"""The librdkafka settings all of chatlog's confluent-kafka clients share."""

from __future__ import annotations

from typing import Any

from chatlog.errors import ConfigurationError
from chatlog.settings import Settings


def require_confluent_kafka() -> None:
    """Check that the ``confluent`` extra is installed.

    Raises:
        ConfigurationError: confluent-kafka is not installed.
    """
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "CHATLOG_TRANSPORT=confluent needs confluent-kafka: pip install 'chatlog[confluent]'"
        ) from exc


def client_config(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and the TLS/SASL settings of ``settings``, in librdkafka's names.

    Raises:
        ConfigurationError: ``CHATLOG_KAFKA_*`` pass-through options are set; they are
            kafka-python option names and have no librdkafka meaning.
    """
    if settings.kafka_options:
        raise ConfigurationError(
            f"the confluent transport cannot use the kafka-python options "
            f"{sorted(settings.kafka_options)} (CHATLOG_KAFKA_*); unset them or use "
            "CHATLOG_TRANSPORT=kafka-python"
        )
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_check_hostname else "none"
        )
        for name, key in (
            ("cafile", "ssl.ca.location"),
            ("certfile", "ssl.certificate.location"),
            ("keyfile", "ssl.key.location"),
            ("password", "ssl.key.password"),
        ):
            value = getattr(settings, f"kafka_ssl_{name}")
            if value is not None:
                config[key] = value
    return config
