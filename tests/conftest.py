"""Fixtures: real Kafka and Redis, never mocks.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers when a Docker
engine answers; else the embedded Tansu broker. Redis: ``REDIS_URL`` if set;
else testcontainers; else a redis-server subprocess. One broker and one
Redis per test session; every test gets its own topic, consumer group and
namespace, and only its own namespace is ever deleted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import redis

from chatlog import ChatLog, Settings
from chatlog.cli.devstack import EmbeddedBroker, EmbeddedRedis, EmbeddedRedisCluster
from chatlog.projector import Projector
from chatlog.redis_clients import open_redis
from chatlog.settings import TRANSPORTS
from tests.fixtures.postgres import PostgresUnavailable, own_database, postgres_server
from tests.helpers import delete_namespace_family, make_test_settings

# Real PostgreSQL, SQLite files and moto's DynamoDB server for the read-model targets.
pytest_plugins = ["tests.fixtures.target_servers"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test session's own on a PostgreSQL server (found or started).

    Tests that use it are marked ``postgresql``; without a server they fail
    with what was tried, they never skip.
    """
    with ExitStack() as stack:
        try:
            server = stack.enter_context(postgres_server())
        except PostgresUnavailable as exc:
            problem = str(exc)
        else:
            problem = ""
        if problem:
            pytest.fail(problem, pytrace=False)
        yield stack.enter_context(own_database(server))


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedRedisCluster]:
    """A Redis Cluster of this test session's own: 3 primaries + 3 replicas, node timeout 1 s.

    Tests that kill or reshard nodes start a cluster of their own instead.
    """
    cluster = EmbeddedRedisCluster(primaries=3, replicas=1)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster() -> Iterator[EmbeddedRedisCluster]:
    """A 3-primary cluster with a replica each, this test's own: it may kill, reshard or flush."""
    cluster = EmbeddedRedisCluster(primaries=3, replicas=1)
    cluster.start()
    yield cluster
    cluster.stop()


#: The Redis deployments every read-model behaviour test runs against.
REDIS_MODES_UNDER_TEST = ("standalone", "cluster")


@pytest.fixture(scope="module", params=REDIS_MODES_UNDER_TEST)
def read_model_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The URL of each Redis deployment (standalone, cluster): the module runs once per mode."""
    if request.param == "cluster":
        cluster: EmbeddedRedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return redis_url


@pytest.fixture(scope="module")
def read_model_settings(
    request: pytest.FixtureRequest, kafka_bootstrap: str, read_model_url: str
) -> Iterator[Settings]:
    """Module settings (as :func:`module_settings`) on each Redis deployment in turn."""
    overrides = getattr(request.module, "SETTINGS_OVERRIDES", {})
    yield from _module_namespace(kafka_bootstrap, read_model_url, overrides)


@pytest.fixture(scope="module")
def read_model_chatlog(read_model_settings: Settings) -> Iterator[ChatLog]:
    """A ChatLog on :func:`read_model_settings`."""
    with ChatLog(read_model_settings) as chatlog:
        yield chatlog


@pytest.fixture(scope="module")
def read_model_projector(
    read_model_settings: Settings, read_model_chatlog: ChatLog
) -> Iterator[Projector]:
    """One projector per Redis deployment for the whole module."""
    read_model_chatlog.producer  # creates the topics before the group joins
    with Projector(read_model_settings).running() as projector:
        yield projector


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A Redis client on the session's Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


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

    A module may set ``SETTINGS_OVERRIDES = {...}`` (e.g. fewer partitions), and
    parametrize this fixture indirectly with more overrides (one run per client).
    """
    overrides = {
        **getattr(request.module, "SETTINGS_OVERRIDES", {}),
        **getattr(request, "param", {}),
    }
    yield from _module_namespace(kafka_bootstrap, redis_url, overrides)


def _module_namespace(
    kafka_bootstrap: str, url: str, overrides: dict[str, Any]
) -> Iterator[Settings]:
    """Settings with their own topic and namespace; the namespace is deleted afterwards."""
    settings = make_test_settings(kafka_bootstrap, url, **overrides)
    yield settings
    client = open_redis(url)
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


@pytest.fixture(params=TRANSPORTS)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Each Kafka client chatlog runs on (``Settings.transport``): the test runs once per client."""
    client: str = request.param
    return client


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


@pytest.fixture
def module_saver(module_settings: Settings, module_projector: Projector) -> Iterator[Any]:
    """A ChatLogCheckpointSaver on the module's log (its projector running), closed after."""
    # Imported here: langgraph is an optional extra.
    from chatlog.histories.checkpointer import ChatLogCheckpointSaver

    with ChatLogCheckpointSaver(module_settings) as saver:
        yield saver


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, so pausing it stalls no other test."""
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()
