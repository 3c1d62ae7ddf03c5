"""Settings: one frozen dataclass, read from the environment by :meth:`Settings.from_env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from chatlog.errors import ConfigurationError
from chatlog.keys import validate_namespace
from chatlog.ttl import MAX_TTL_MS

DEFAULT_TOPIC = "chatlog.events"
DEFAULT_NAMESPACE = "chatlog:v1"
DEFAULT_GROUP = "chatlog-projector"
#: Longest TTL accepted (100 years): an expiry in epoch milliseconds must fit Redis PEXPIREAT.
MAX_TTL_S = 100 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything chatlog needs to reach Kafka and Redis and to shape its log.

    Attributes:
        kafka_bootstrap_servers: Comma-separated ``host:port`` list (``KAFKA_BOOTSTRAP_SERVERS``).
        redis_url: Redis URL for the read model (``REDIS_URL``). The ``CHATLOG_REDIS_*``
            credentials and TLS files are folded into it (what the URL itself says wins),
            so every Redis client chatlog opens from it uses them. On a Redis
            Cluster it names any node.
        redis_mode: ``auto`` (default: a server reporting ``cluster_enabled:1`` is a
            cluster), ``standalone`` or ``cluster`` (``CHATLOG_REDIS_MODE``); see
            :func:`chatlog.redis_clients.open_redis`.
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
        fetch_max_wait_ms: Longest the broker may hold the projector's fetch when no
            record is waiting (``CHATLOG_FETCH_MAX_WAIT_MS``). Apache Kafka answers as
            soon as a record arrives, so there a long wait (Kafka's default is 500)
            only saves idle polling; some Kafka-compatible brokers (the embedded
            Tansu) hold the fetch for the whole wait, which then adds to
            append -> visible latency. The default, 20, suits both.
        wakeup: Writers announce each acknowledged write on a Redis pub/sub
            channel; an idle projector pauses its fetches and resumes them when
            a wake-up names one of its partitions (``CHATLOG_WAKEUP``, on by
            default); see :mod:`chatlog.wakeups`. Off, or where Redis refuses
            pub/sub, the projector finds new records by its fetch cycle alone.
        transport: The Kafka client of the producer and the projector
            (``CHATLOG_TRANSPORT``): ``kafka-python`` (the default) or ``confluent``
            (confluent-kafka, the ``confluent`` extra: librdkafka does the protocol
            work in C, a fraction of the CPU per append and per projected event;
            the ``CHATLOG_KAFKA_*`` pass-through options do not apply to it).
        kafka_options: Extra keyword options passed to every kafka-python client
            (TLS, SASL, ...); set from ``CHATLOG_KAFKA_*`` variables.
        kafka_security_protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``
            (``CHATLOG_KAFKA_SECURITY_PROTOCOL``).
        kafka_sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``
            (``CHATLOG_KAFKA_SASL_MECHANISM``).
        kafka_sasl_username: SASL user (``CHATLOG_KAFKA_SASL_USERNAME``).
        kafka_sasl_password: SASL password (``CHATLOG_KAFKA_SASL_PASSWORD``; masked in output).
        kafka_ssl_cafile: CA bundle that signs the brokers' certificates
            (``CHATLOG_KAFKA_SSL_CAFILE``).
        kafka_ssl_certfile: Client certificate for mutual TLS (``CHATLOG_KAFKA_SSL_CERTFILE``).
        kafka_ssl_keyfile: Client private key for mutual TLS (``CHATLOG_KAFKA_SSL_KEYFILE``).
        kafka_ssl_password: Password of the client key (``CHATLOG_KAFKA_SSL_PASSWORD``; masked).
        kafka_ssl_check_hostname: Verify the broker host name against its certificate
            (``CHATLOG_KAFKA_SSL_CHECK_HOSTNAME``).
        redis_username: Redis ACL user (``CHATLOG_REDIS_USERNAME``); a user in the URL wins.
        redis_password: Redis password (``CHATLOG_REDIS_PASSWORD``; masked); one in the URL wins.
        redis_ssl_ca_certs: CA bundle for a ``rediss://`` URL (``CHATLOG_REDIS_SSL_CA_CERTS``).
        redis_ssl_certfile: Client certificate for Redis TLS (``CHATLOG_REDIS_SSL_CERTFILE``).
        redis_ssl_keyfile: Client key for Redis TLS (``CHATLOG_REDIS_SSL_KEYFILE``).
        metrics_port: Port of the projector's ``/metrics``, ``/healthz`` and ``/readyz``
            (``CHATLOG_METRICS_PORT``); no server when unset.
        metrics_host: Address the metrics server binds (``CHATLOG_METRICS_HOST``);
            loopback by default, since the endpoints have no authentication.
        log_format: ``text`` or ``json`` (``CHATLOG_LOG_FORMAT``).
        ready_max_lag: ``/readyz`` answers 200 while the worker's assigned partitions are
            at most this many events behind (``CHATLOG_READY_MAX_LAG``).
        session_ttl_s: Idle time after which a session expires, judged by the time of
            its last event; ``None`` never (``CHATLOG_SESSION_TTL``). A session's
            ``SessionTtlSet`` event overrides it.
        session_ttl_refresh_on_read: Reads push a session's expiry to now + TTL too
            (``CHATLOG_SESSION_TTL_ON_READ``); a rebuild only sees appends.
        scope_sessions_by_user: Derive the stored session id from the user and the
            session id (``CHATLOG_SCOPE_SESSIONS_BY_USER``), so no user can take another
            user's session id; every history then needs a user. Off by default: stored
            ids stay the application's ids (see :mod:`chatlog.session_scope`).
        encryption_key: The key-encryption key (``CHATLOG_ENCRYPTION_KEY``): base64 of
            32 bytes, or ``file:PATH`` of a file holding that. When set, every
            message's content is encrypted under a data key of its subject (the
            user, else the session) kept in :attr:`keys_topic`; see
            :mod:`chatlog.producers.key_store`. Needs ``chatlog[encryption]``.
        encryption_old_keys: Earlier key-encryption keys still accepted for reading
            (``CHATLOG_ENCRYPTION_OLD_KEYS``, comma-separated, same forms) while
            ``chatlog keys rotate`` re-wraps the data keys under the new one.
        thread_ttl_s: Idle time after which a LangGraph thread expires, judged by the
            time of its last checkpoint event; ``None`` never (``CHATLOG_THREAD_TTL``).
            ``config["configurable"]["thread_ttl_s"]`` overrides it per thread.
        thread_ttl_refresh_on_read: Saver reads publish a ``ThreadTouched`` event that
            pushes the thread's expiry to now + TTL (``CHATLOG_THREAD_TTL_ON_READ``).
        max_checkpoint_bytes: Largest checkpoint or write call the saver splits into
            chunks of at most ``max_event_bytes`` (``CHATLOG_MAX_CHECKPOINT_BYTES``);
            larger calls are refused before anything is published.
        allow_eviction: Accept a Redis ``maxmemory-policy`` that can evict chatlog's
            keys (``CHATLOG_ALLOW_EVICTION``); then loss detection and repair are what
            keep readers from a shorter history. Refused at start otherwise.
        read_model: Where ``ChatLog`` reads histories (``CHATLOG_READ_MODEL``): a
            ``sqlite:///``, ``postgresql://`` or ``dynamodb://`` target URL that
            ``chatlog projector run --target`` keeps current; ``None`` reads Redis
            (``redis_url``).

    """

    kafka_bootstrap_servers: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    redis_mode: str = "auto"
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
    fetch_max_wait_ms: int = 20
    wakeup: bool = True
    transport: str = "kafka-python"
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_password: str | None = None
    kafka_ssl_check_hostname: bool = True
    redis_username: str | None = None
    redis_password: str | None = None
    redis_ssl_ca_certs: str | None = None
    redis_ssl_certfile: str | None = None
    redis_ssl_keyfile: str | None = None
    metrics_port: int | None = None
    # Loopback unless asked: the endpoints have no authentication. A container
    # sets 0.0.0.0 (its own network namespace) and publishes the port on
    # the host's loopback or behind a scraper's network policy.
    metrics_host: str = "127.0.0.1"
    log_format: str = "text"
    ready_max_lag: int = 1_000
    session_ttl_s: float | None = None
    session_ttl_refresh_on_read: bool = False
    scope_sessions_by_user: bool = False
    # Not in the repr: a logged Settings must never carry a key.
    encryption_key: str | None = field(default=None, repr=False)
    encryption_old_keys: str | None = field(default=None, repr=False)
    thread_ttl_s: float | None = None
    thread_ttl_refresh_on_read: bool = False
    max_checkpoint_bytes: int = 64 * 1024 * 1024
    allow_eviction: bool = False
    read_model: str | None = None

    def __post_init__(self) -> None:
        if not self.topic or self.topic.endswith(".dlq"):
            raise ConfigurationError(
                f"topic {self.topic!r} is not usable: give a non-empty name not ending in .dlq"
            )
        validate_namespace(self.namespace, setting="CHATLOG_NAMESPACE (Settings.namespace)")
        for name in ("partitions", "replication_factor", "max_event_bytes", "max_poll_records",
                     "fetch_max_wait_ms", "max_checkpoint_bytes"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.transport not in TRANSPORTS:
            raise ConfigurationError(
                f"transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}"
            )
        if self.redis_mode not in REDIS_MODES:
            raise ConfigurationError(
                f"CHATLOG_REDIS_MODE {self.redis_mode!r} is not one of {', '.join(REDIS_MODES)}"
            )
        for name in ("read_timeout_s", "publish_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if self.session_ttl_s is not None and not 0 < self.session_ttl_s <= MAX_TTL_MS / 1000:
            raise ConfigurationError(
                f"session_ttl_s must be positive and at most {MAX_TTL_MS // 1000} s (100 years), "
                f"or unset for no expiry; got {self.session_ttl_s}"
            )
        if self.thread_ttl_s is not None and not 0 < self.thread_ttl_s <= MAX_TTL_S:
            raise ConfigurationError(
                f"thread_ttl_s must be positive and at most {MAX_TTL_S} (or unset for no expiry), "
                f"got {self.thread_ttl_s}"
            )
        _check_security(self)
        # Folded in once here rather than passed at each of the many call sites
        # that open a client from the URL (sync, asyncio, replay targets).
        object.__setattr__(self, "redis_url", _redis_url_with_credentials(self))

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic that receives events the projector cannot apply."""
        return f"{self.topic}.dlq"

    @property
    def checkpoint_topic(self) -> str:
        """The LangGraph checkpoint log (``ChatLogCheckpointSaver``), keyed by thread id."""
        return f"{self.topic}.checkpoints"

    @property
    def keys_topic(self) -> str:
        """The compacted data-key store of encryption (``CHATLOG_ENCRYPTION_KEY``)."""
        return f"{self.topic}.keys"

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword options shared by every kafka-python client chatlog creates.

        The TLS and SASL settings map onto kafka-python's options; anything in
        ``kafka_options`` (``CHATLOG_KAFKA_<OPTION>``) is passed as is and wins.
        """
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers.split(","),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_check_hostname"] = self.kafka_ssl_check_hostname
            for name in ("cafile", "certfile", "keyfile", "password"):
                value = getattr(self, f"kafka_ssl_{name}")
                if value is not None:
                    options[f"ssl_{name}"] = value
        options.update(self.kafka_options)
        return options

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
        explicit = set(ENVIRONMENT.values())
        kafka_options = {
            key[len("CHATLOG_KAFKA_") :].lower(): _option(value)
            for key, value in env.items()
            if key.startswith("CHATLOG_KAFKA_") and value != "" and key not in explicit
        }
        if kafka_options:
            values["kafka_options"] = kafka_options
        values.update(overrides)
        return cls(**values)


#: The Kafka clients chatlog can produce and project with (``Settings.transport``).
TRANSPORTS = ("kafka-python", "confluent")

#: How chatlog talks to Redis (``Settings.redis_mode``): ``auto`` asks the server
#: (``INFO cluster``), ``standalone`` or ``cluster`` say it.
REDIS_MODES = ("auto", "standalone", "cluster")

#: Setting name -> environment variable.
ENVIRONMENT: dict[str, str] = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "redis_url": "REDIS_URL",
    "redis_mode": "CHATLOG_REDIS_MODE",
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
    "fetch_max_wait_ms": "CHATLOG_FETCH_MAX_WAIT_MS",
    "wakeup": "CHATLOG_WAKEUP",
    "transport": "CHATLOG_TRANSPORT",
    "session_ttl_s": "CHATLOG_SESSION_TTL",
    "session_ttl_refresh_on_read": "CHATLOG_SESSION_TTL_ON_READ",
    "scope_sessions_by_user": "CHATLOG_SCOPE_SESSIONS_BY_USER",
    "encryption_key": "CHATLOG_ENCRYPTION_KEY",
    "encryption_old_keys": "CHATLOG_ENCRYPTION_OLD_KEYS",
    "thread_ttl_s": "CHATLOG_THREAD_TTL",
    "thread_ttl_refresh_on_read": "CHATLOG_THREAD_TTL_ON_READ",
    "max_checkpoint_bytes": "CHATLOG_MAX_CHECKPOINT_BYTES",
    "allow_eviction": "CHATLOG_ALLOW_EVICTION",
    "read_model": "CHATLOG_READ_MODEL",
    "kafka_security_protocol": "CHATLOG_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "CHATLOG_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "CHATLOG_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "CHATLOG_KAFKA_SASL_PASSWORD",
    "kafka_ssl_cafile": "CHATLOG_KAFKA_SSL_CAFILE",
    "kafka_ssl_certfile": "CHATLOG_KAFKA_SSL_CERTFILE",
    "kafka_ssl_keyfile": "CHATLOG_KAFKA_SSL_KEYFILE",
    "kafka_ssl_password": "CHATLOG_KAFKA_SSL_PASSWORD",
    "kafka_ssl_check_hostname": "CHATLOG_KAFKA_SSL_CHECK_HOSTNAME",
    "redis_username": "CHATLOG_REDIS_USERNAME",
    "redis_password": "CHATLOG_REDIS_PASSWORD",
    "redis_ssl_ca_certs": "CHATLOG_REDIS_SSL_CA_CERTS",
    "redis_ssl_certfile": "CHATLOG_REDIS_SSL_CERTFILE",
    "redis_ssl_keyfile": "CHATLOG_REDIS_SSL_KEYFILE",
    "metrics_port": "CHATLOG_METRICS_PORT",
    "metrics_host": "CHATLOG_METRICS_HOST",
    "log_format": "CHATLOG_LOG_FORMAT",
    "ready_max_lag": "CHATLOG_READY_MAX_LAG",
}

#: Settings whose values are secrets: shown masked by ``chatlog config show``.
SECRET_SETTINGS = frozenset(
    {
        "kafka_sasl_password",
        "kafka_ssl_password",
        "redis_password",
        "encryption_key",
        "encryption_old_keys",
    }
)

def _redis_url_with_credentials(settings: Settings) -> str:
    """``redis_url`` with the ACL user, password and TLS files added where it lacks them."""
    parts = urlsplit(settings.redis_url)
    if parts.scheme not in ("redis", "rediss"):
        return settings.redis_url
    netloc = parts.netloc
    if "@" not in netloc and (settings.redis_username or settings.redis_password is not None):
        auth = quote(settings.redis_username or "", safe="")
        if settings.redis_password is not None:
            auth += ":" + quote(settings.redis_password, safe="")
        netloc = f"{auth}@{netloc}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {name for name, _ in query}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, f"redis_{name}")
        if value and name not in given:
            query.append((name, value))
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _check_security(settings: Settings) -> None:
    """Refuse TLS/SASL/metrics combinations that would only fail later, at connect time."""
    protocol = settings.kafka_security_protocol
    if protocol not in _SECURITY_PROTOCOLS:
        raise ConfigurationError(
            f"kafka_security_protocol {protocol!r} is not one of {', '.join(_SECURITY_PROTOCOLS)}"
        )
    if protocol.startswith("SASL_") and "sasl_mechanism" not in settings.kafka_options:
        if settings.kafka_sasl_mechanism not in _SASL_MECHANISMS:
            raise ConfigurationError(
                f"kafka_sasl_mechanism {settings.kafka_sasl_mechanism!r} is not one of "
                f"{', '.join(_SASL_MECHANISMS)} (set CHATLOG_KAFKA_SASL_MECHANISM)"
            )
        if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
            raise ConfigurationError(
                f"{protocol} needs kafka_sasl_username and kafka_sasl_password "
                "(CHATLOG_KAFKA_SASL_USERNAME, CHATLOG_KAFKA_SASL_PASSWORD)"
            )
    tls_files = (
        settings.redis_ssl_ca_certs, settings.redis_ssl_certfile, settings.redis_ssl_keyfile
    )
    if any(tls_files) and not settings.redis_url.startswith("rediss://"):
        raise ConfigurationError(
            "redis_ssl_* files are set but redis_url does not use TLS: write it as rediss://..."
        )
    if settings.metrics_port is not None and not 0 <= settings.metrics_port <= 65535:
        raise ConfigurationError(f"metrics_port must be 0-65535, got {settings.metrics_port}")
    if settings.log_format not in ("text", "json"):
        raise ConfigurationError(f"log_format must be text or json, got {settings.log_format!r}")
    if settings.ready_max_lag < 0:
        raise ConfigurationError(f"ready_max_lag must be at least 0, got {settings.ready_max_lag}")

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
