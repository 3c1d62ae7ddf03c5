"""Settings: one frozen dataclass, read from the environment by :meth:`Settings.from_env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from chatlog.errors import ConfigurationError

DEFAULT_TOPIC = "chatlog.events"
DEFAULT_NAMESPACE = "chatlog:v1"
DEFAULT_GROUP = "chatlog-projector"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything chatlog needs to reach Kafka and Redis and to shape its log.

    Attributes:
        kafka_bootstrap_servers: Comma-separated ``host:port`` list (``KAFKA_BOOTSTRAP_SERVERS``).
        redis_url: Redis URL for the read model (``REDIS_URL``).
        topic: Event topic (``CHATLOG_TOPIC``); the dead-letter topic is ``<topic>.dlq``.
        namespace: Redis key namespace of the read model (``CHATLOG_NAMESPACE``).
        partitions: Partitions when chatlog creates the topic (``CHATLOG_PARTITIONS``).
        replication_factor: Replication when chatlog creates the topic
            (``CHATLOG_REPLICATION_FACTOR``).
        auto_create_topic: Create the topic when missing (``CHATLOG_AUTO_CREATE_TOPIC``).
        consumer_group: Projector consumer group (``CHATLOG_CONSUMER_GROUP``).
        source: Application name stamped on every event (``CHATLOG_SOURCE``).
        max_event_bytes: Largest encoded event accepted (``CHATLOG_MAX_EVENT_BYTES``).
        read_timeout_s: How long a read waits for its own writes to be projected
            (``CHATLOG_READ_TIMEOUT``).
        publish_timeout_s: How long an append waits for the broker's acknowledgement
            (``CHATLOG_PUBLISH_TIMEOUT``).
        consumer_session_timeout_ms: Group session timeout (``CHATLOG_SESSION_TIMEOUT_MS``).
        consumer_heartbeat_interval_ms: Group heartbeat (``CHATLOG_HEARTBEAT_INTERVAL_MS``).
        max_poll_records: Largest projector batch (``CHATLOG_MAX_POLL_RECORDS``).
        kafka_options: Extra keyword options passed to every kafka-python client
            (TLS, SASL, ...); set from ``CHATLOG_KAFKA_*`` variables.
    """

    kafka_bootstrap_servers: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    topic: str = DEFAULT_TOPIC
    namespace: str = DEFAULT_NAMESPACE
    partitions: int = 12
    replication_factor: int = 1
    auto_create_topic: bool = True
    consumer_group: str = DEFAULT_GROUP
    source: str | None = None
    max_event_bytes: int = 1024 * 1024
    read_timeout_s: float = 5.0
    publish_timeout_s: float = 30.0
    consumer_session_timeout_ms: int = 10_000
    consumer_heartbeat_interval_ms: int = 1_000
    max_poll_records: int = 2_000
    kafka_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.topic or self.topic.endswith(".dlq"):
            raise ConfigurationError(
                f"topic {self.topic!r} is not usable: give a non-empty name not ending in .dlq"
            )
        if not self.namespace or any(c in self.namespace for c in "{} \n"):
            raise ConfigurationError(
                f"namespace {self.namespace!r} must be non-empty, without braces or spaces"
            )
        for name in ("partitions", "replication_factor", "max_event_bytes", "max_poll_records"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("read_timeout_s", "publish_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic that receives events the projector cannot apply."""
        return f"{self.topic}.dlq"

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword options shared by every kafka-python client chatlog creates."""
        return {"bootstrap_servers": self.kafka_bootstrap_servers.split(","), **self.kafka_options}

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated like the original)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from environment variables, then apply ``overrides``.

        Raises:
            ConfigurationError: a variable holds a value of the wrong type.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, variable in ENVIRONMENT.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            values[name] = _parse(variable, raw, str(types[name]))
        kafka_options = {
            key[len("CHATLOG_KAFKA_") :].lower(): _option(value)
            for key, value in env.items()
            if key.startswith("CHATLOG_KAFKA_") and value != ""
        }
        if kafka_options:
            values["kafka_options"] = kafka_options
        values.update(overrides)
        return cls(**values)


#: Setting name -> environment variable.
ENVIRONMENT: dict[str, str] = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "redis_url": "REDIS_URL",
    "topic": "CHATLOG_TOPIC",
    "namespace": "CHATLOG_NAMESPACE",
    "partitions": "CHATLOG_PARTITIONS",
    "replication_factor": "CHATLOG_REPLICATION_FACTOR",
    "auto_create_topic": "CHATLOG_AUTO_CREATE_TOPIC",
    "consumer_group": "CHATLOG_CONSUMER_GROUP",
    "source": "CHATLOG_SOURCE",
    "max_event_bytes": "CHATLOG_MAX_EVENT_BYTES",
    "read_timeout_s": "CHATLOG_READ_TIMEOUT",
    "publish_timeout_s": "CHATLOG_PUBLISH_TIMEOUT",
    "consumer_session_timeout_ms": "CHATLOG_SESSION_TIMEOUT_MS",
    "consumer_heartbeat_interval_ms": "CHATLOG_HEARTBEAT_INTERVAL_MS",
    "max_poll_records": "CHATLOG_MAX_POLL_RECORDS",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(variable: str, raw: str, type_name: str) -> Any:
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{variable}={raw!r} is not a number") from exc
    if type_name.startswith("bool"):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigurationError(f"{variable}={raw!r} is not a boolean (use true or false)")
    return raw


def _option(raw: str) -> Any:
    """Pass-through Kafka options: numbers and booleans typed, everything else a string."""
    if raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    try:
        return int(raw)
    except ValueError:
        return raw
