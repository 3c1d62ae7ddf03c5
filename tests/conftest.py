"""Fixtures: real Kafka and Redis, never mocks.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers when a Docker
engine answers; else the embedded Tansu broker. Redis: ``REDIS_URL`` if set;
else testcontainers; else a redis-server subprocess. One broker and one
Redis per test session; every test gets its own topic, consumer group and
namespace, and only its own namespace is ever deleted.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from chatlog import ChatLog, Settings
from chatlog.cli.devstack import EmbeddedBroker, EmbeddedRedis
from chatlog.keys import ReadModelKeys
from chatlog.producers import end_offsets
from chatlog.projector import Projector


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker | None]:
    """The embedded broker when this session runs one (fault tests pause it), else None."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _docker_answers():
        yield None
        return
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(embedded_broker: EmbeddedBroker | None) -> Iterator[str]:
    """Bootstrap servers of the session's Kafka."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
    elif embedded_broker is not None:
        yield embedded_broker.bootstrap_servers
    else:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(image="apache/kafka:3.8.0").with_kraft() as container:
            yield container.get_bootstrap_server()


@pytest.fixture(scope="session")
def embedded_redis() -> Iterator[EmbeddedRedis | None]:
    """The redis-server subprocess when this session runs one, else None."""
    if os.environ.get("REDIS_URL") or _docker_answers():
        yield None
        return
    server = EmbeddedRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis | None) -> Iterator[str]:
    """URL of the session's Redis."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
    elif embedded_redis is not None:
        yield embedded_redis.url
    else:
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    """Delete the keys of one namespace (never FLUSHALL: the Redis may be shared)."""
    keys = list(client.scan_iter(match=ReadModelKeys(namespace).all_pattern(), count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A Redis client on the session's Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def make_test_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings on the session's services with a unique topic, group and namespace.

    Consumer-group timings are the short ones the embedded broker joins
    quickly with; timeouts are generous for a loaded CI machine.
    """
    unique = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "redis_url": redis_url,
        "topic": f"test-{unique}",
        "namespace": f"test:{unique}",
        "consumer_group": f"group-{unique}",
        "consumer_session_timeout_ms": 6000,
        "consumer_heartbeat_interval_ms": 1000,
        "read_timeout_s": 20.0,
        "publish_timeout_s": 20.0,
    }
    values.update(overrides)
    return Settings(**values)


def delete_namespace_family(client: redis.Redis, namespace: str) -> None:
    """Delete a test's namespace and the ones named after it (``<ns>-rebuilt``, ...)."""
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis
) -> Iterator[Callable[..., Settings]]:
    """Settings with a unique topic, group and namespace; overrides as keywords."""
    namespaces: list[str] = []

    def make(**overrides: Any) -> Settings:
        # A test may point at a Redis of its own (redis_url=...).
        url = overrides.pop("redis_url", redis_url)
        settings = make_test_settings(kafka_bootstrap, url, **overrides)
        namespaces.append(settings.namespace)
        return settings

    yield make
    for namespace in namespaces:
        delete_namespace_family(redis_client, namespace)


@pytest.fixture(scope="module")
def module_settings(
    request: pytest.FixtureRequest, kafka_bootstrap: str, redis_url: str
) -> Iterator[Settings]:
    """One topic, group and namespace for a whole test module; its tests use their own ids.

    A module may set ``SETTINGS_OVERRIDES = {...}`` (e.g. fewer partitions).
    """
    overrides = getattr(request.module, "SETTINGS_OVERRIDES", {})
    settings = make_test_settings(kafka_bootstrap, redis_url, **overrides)
    yield settings
    client = redis.Redis.from_url(redis_url)
    delete_namespace_family(client, settings.namespace)
    client.close()


@pytest.fixture(scope="module")
def module_chatlog(module_settings: Settings) -> Iterator[ChatLog]:
    """A ChatLog on the module's settings."""
    with ChatLog(module_settings) as chatlog:
        yield chatlog


@pytest.fixture(scope="module")
def module_projector(module_settings: Settings, module_chatlog: ChatLog) -> Iterator[Projector]:
    """One projector running for the whole module (group joins cost seconds each)."""
    module_chatlog.producer  # creates the topics before the group joins
    with Projector(module_settings).running() as projector:
        yield projector


def eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait until ``check()`` holds (eventual consistency), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def read_topic(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every raw record of ``topic`` up to its end offsets now, read by manual assignment."""
    ends = end_offsets(settings, topic)
    consumer = KafkaConsumer(
        **settings.kafka_client_options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
        consumer.assign(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} could not be read to its end"
            for raws in consumer.poll(timeout_ms=200).values():
                records.extend(r for r in raws if r.offset < ends[r.partition])
        return records
    finally:
        consumer.close()


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cli_args(settings: Settings, *args: str) -> list[str]:
    """``chatlog`` command-line arguments reaching the services and names of ``settings``."""
    return [
        "--bootstrap-servers",
        settings.kafka_bootstrap_servers,
        "--redis-url",
        settings.redis_url,
        "--topic",
        settings.topic,
        "--namespace",
        settings.namespace,
        *args,
    ]


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Settings of this test (unique topic, group and namespace)."""
    return settings_factory()


@pytest.fixture
def chatlog_factory() -> Iterator[Callable[[Settings], ChatLog]]:
    """Makes ChatLog facades that are closed after the test."""
    with ExitStack() as stack:
        yield lambda settings: stack.enter_context(ChatLog(settings))


@pytest.fixture
def projector_factory() -> Iterator[Callable[..., Projector]]:
    """Starts in-process projectors (background threads) stopped after the test."""
    with ExitStack() as stack:

        def start(settings: Settings, **kwargs: Any) -> Projector:
            return stack.enter_context(Projector(settings, **kwargs).running())

        yield start


@pytest.fixture
def chatlog(settings: Settings, chatlog_factory: Callable[[Settings], ChatLog]) -> ChatLog:
    """A ChatLog on this test's settings."""
    return chatlog_factory(settings)


@pytest.fixture
def projector(settings: Settings, projector_factory: Callable[..., Projector]) -> Projector:
    """A running projector on this test's settings."""
    return projector_factory(settings)
