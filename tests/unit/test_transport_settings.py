"""Choosing chatlog's Kafka client: CHATLOG_TRANSPORT and the confluent-kafka configs."""

from __future__ import annotations

import pytest

from chatlog.errors import ConfigurationError
from chatlog.producers.confluent_consumer import consumer_config
from chatlog.producers.confluent_transport import producer_config
from chatlog.settings import Settings


def test_kafka_python_is_the_default_and_confluent_is_chosen_by_environment() -> None:
    """No variable: kafka-python; CHATLOG_TRANSPORT=confluent: the confluent transport."""
    assert Settings().transport == "kafka-python"
    assert Settings.from_env({"CHATLOG_TRANSPORT": "confluent"}).transport == "confluent"


def test_an_unknown_transport_is_refused() -> None:
    """A typo fails at configuration time, naming the choices."""
    with pytest.raises(ConfigurationError, match="kafka-python, confluent"):
        Settings(transport="librdkafka")


def test_confluent_config_carries_the_group_commit_and_tls_settings() -> None:
    """Manual commits, earliest reset, the group timings and the TLS files map to librdkafka."""
    settings = Settings(
        consumer_group="g", consumer_session_timeout_ms=6000, kafka_security_protocol="SSL",
        kafka_ssl_cafile="/ca.pem", kafka_ssl_check_hostname=False,
    )
    config = consumer_config(settings)
    assert config["group.id"] == "g"
    assert config["enable.auto.commit"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["session.timeout.ms"] == 6000
    assert config["ssl.ca.location"] == "/ca.pem"
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_confluent_config_refuses_kafka_python_pass_through_options() -> None:
    """CHATLOG_KAFKA_* options are kafka-python names: refused rather than silently dropped."""
    with pytest.raises(ConfigurationError, match="CHATLOG_TRANSPORT=kafka-python"):
        consumer_config(Settings(kafka_options={"request_timeout_ms": 1000}))


def test_confluent_producer_config_keeps_the_default_producers_guarantees() -> None:
    """Idempotent acks=all, murmur2 partitions, no linger, and the publish timeout on records."""
    config = producer_config(Settings(publish_timeout_s=7.5, max_event_bytes=100_000))
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["partitioner"] == "murmur2_random"
    assert config["linger.ms"] == 0
    assert config["message.timeout.ms"] == 7500
    assert config["message.max.bytes"] > 100_000


def test_confluent_producer_config_refuses_kafka_python_pass_through_options() -> None:
    """The producer side refuses CHATLOG_KAFKA_* the same way the consumer side does."""
    with pytest.raises(ConfigurationError, match="CHATLOG_TRANSPORT=kafka-python"):
        producer_config(Settings(kafka_options={"request_timeout_ms": 1000}))


def test_the_fetch_wait_comes_from_the_environment_and_reaches_librdkafka() -> None:
    """CHATLOG_FETCH_MAX_WAIT_MS: 20 by default, any positive value, the same on both clients."""
    assert Settings().fetch_max_wait_ms == 20
    settings = Settings.from_env({"CHATLOG_FETCH_MAX_WAIT_MS": "500"})
    assert settings.fetch_max_wait_ms == 500
    assert consumer_config(settings)["fetch.wait.max.ms"] == 500
    with pytest.raises(ConfigurationError, match="fetch_max_wait_ms"):
        Settings(fetch_max_wait_ms=0)
