"""Settings from the environment, the Redis key layout and id validation."""

from __future__ import annotations

import pytest

from chatlog.errors import ConfigurationError, InvalidSessionIdError, InvalidUserIdError
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.keys import ReadModelKeys
from chatlog.settings import Settings


def test_settings_read_every_documented_variable() -> None:
    """Settings.from_env maps the environment variables onto typed fields."""
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "REDIS_URL": "redis://r:6380/2",
            "CHATLOG_TOPIC": "events",
            "CHATLOG_NAMESPACE": "app:v2",
            "CHATLOG_PARTITIONS": "24",
            "CHATLOG_AUTO_CREATE_TOPIC": "false",
            "CHATLOG_READ_TIMEOUT": "2.5",
            "CHATLOG_KAFKA_SECURITY_PROTOCOL": "SSL",
        }
    )
    assert settings.kafka_client_options()["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert settings.kafka_client_options()["security_protocol"] == "SSL"
    assert (settings.redis_url, settings.topic, settings.namespace) == (
        "redis://r:6380/2",
        "events",
        "app:v2",
    )
    assert settings.partitions == 24
    assert settings.auto_create_topic is False
    assert settings.read_timeout_s == 2.5
    assert settings.dlq_topic == "events.dlq"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CHATLOG_PARTITIONS": "many"}, "CHATLOG_PARTITIONS"),
        ({"CHATLOG_AUTO_CREATE_TOPIC": "maybe"}, "CHATLOG_AUTO_CREATE_TOPIC"),
        ({"CHATLOG_PARTITIONS": "0"}, "partitions"),
        ({"CHATLOG_TOPIC": "x.dlq"}, "dlq"),
        ({"CHATLOG_NAMESPACE": "a{b}"}, "namespace"),
    ],
)
def test_bad_settings_raise_configuration_error_naming_the_setting(
    env: dict[str, str], fragment: str
) -> None:
    """A malformed variable raises ConfigurationError that names it."""
    with pytest.raises(ConfigurationError, match=fragment.replace(".", r"\.")):
        Settings.from_env(env)


def test_session_keys_share_one_cluster_slot() -> None:
    """Messages and meta of a session carry the same hash tag."""
    keys = ReadModelKeys("chatlog:v1")
    assert keys.messages("s-1") == "chatlog:v1:s:{s-1}:msgs"
    assert keys.meta("s-1") == "chatlog:v1:s:{s-1}:meta"
    assert keys.user_sessions("alice") == "chatlog:v1:u:{alice}:sessions"
    assert ReadModelKeys.session_of(keys.meta("a}b")) == "a}b"


@pytest.mark.parametrize("bad", ["", "x" * 257, "tab\there", "nul\x00", 42, None, b"bytes"])
def test_invalid_session_ids_are_refused(bad: object) -> None:
    """Empty, over 256 bytes, control characters and non-str ids raise InvalidSessionIdError."""
    with pytest.raises(InvalidSessionIdError):
        validate_session_id(bad)


def test_session_id_limit_counts_utf8_bytes() -> None:
    """The 256-byte limit is on UTF-8 bytes, not characters."""
    assert validate_session_id("é" * 128) == "é" * 128
    with pytest.raises(InvalidSessionIdError, match="257 bytes"):
        validate_session_id("é" * 128 + "x")


def test_user_id_none_is_allowed_but_bad_ids_are_refused() -> None:
    """A history may have no user; a given user id follows the session id rules."""
    assert validate_user_id(None) is None
    with pytest.raises(InvalidUserIdError):
        validate_user_id("")
