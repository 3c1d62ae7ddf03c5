"""Wake-ups (CHATLOG_WAKEUP): a hint that changes when the projector reads, not what."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.cli.devstack import EmbeddedRedisCluster
from chatlog.producers import end_offsets
from chatlog.projector import Projector
from chatlog.projector.replay import Replayer
from chatlog.redis_clients import open_redis
from tests.helpers import delete_namespace_family, unique

#: Writes are read back one by one until a woken fetch carried one (the group
#: consumer, its fetch held by the embedded broker, seldom finds a write first).
MAX_WRITES = 200

USER = "wakeup-tests"


def _write_and_read_back(
    chatlog: ChatLog, projector: Projector, *, sessions: int, until_woken: bool
) -> dict[str, list[BaseMessage]]:
    """Append to several sessions, reading each back at once; return what was written."""
    written: dict[str, list[BaseMessage]] = {unique("s"): [] for _ in range(sessions)}
    n = 0
    while n < sessions * 3 or (
        until_woken and projector.stats.woken_records == 0 and n < MAX_WRITES
    ):
        session_id = list(written)[n % sessions]
        message = (HumanMessage if n % 2 else AIMessage)(f"message {n}")
        history = chatlog.history(session_id, USER)
        history.add_messages([message])
        written[session_id].append(message)
        assert history.messages == written[session_id]
        n += 1
    return written


def _assert_applied_exactly_once(
    settings: Settings, chatlog: ChatLog, projector: Projector,
    written: dict[str, list[BaseMessage]],
) -> None:
    """The read model equals the log, and each record was applied once, none skipped."""
    for session_id, messages in written.items():
        assert chatlog.history(session_id, USER).messages == messages
    events = sum(end_offsets(settings, settings.topic).values())
    assert (projector.stats.applied, projector.stats.skipped) == (events, 0)
    assert Replayer(settings, redis_client=chatlog.redis).verify(settings.namespace).ok


def test_woken_fetches_apply_exactly_the_log(
    kafka_client: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> None:
    """Records read by woken fetches are the log's, each applied once, none skipped."""
    settings = settings_factory(partitions=3, transport=kafka_client)
    chatlog = chatlog_factory(settings)
    chatlog.producer  # creates the topics before the group joins
    projector = projector_factory(settings)
    assert projector.wakeups is not None
    written = _write_and_read_back(chatlog, projector, sessions=5, until_woken=True)
    assert projector.stats.woken_records > 0
    assert projector.wakeups.received > 0
    _assert_applied_exactly_once(settings, chatlog, projector, written)


def test_a_projector_with_wakeups_off_converges(
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> None:
    """Writers announce, nobody listens: the fetch cycle alone projects every write."""
    settings = settings_factory(partitions=3)
    chatlog = chatlog_factory(settings)
    chatlog.producer
    projector = projector_factory(settings.with_(wakeup=False))
    assert projector.wakeups is None
    written = _write_and_read_back(chatlog, projector, sessions=4, until_woken=False)
    assert projector.stats.woken_records == 0
    _assert_applied_exactly_once(settings, chatlog, projector, written)


def test_writers_without_wakeups_are_still_projected(
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> None:
    """A listening projector finds unannounced writes (lost wake-ups) by its fetch cycle."""
    settings = settings_factory(partitions=3)
    chatlog = chatlog_factory(settings.with_(wakeup=False))
    assert chatlog.producer.wakeups is None
    projector = projector_factory(settings)
    assert projector.wakeups is not None
    written = _write_and_read_back(chatlog, projector, sessions=4, until_woken=False)
    assert (projector.wakeups.received, projector.stats.woken_records) == (0, 0)
    _assert_applied_exactly_once(settings, chatlog, projector, written)


@pytest.fixture
def no_pubsub_url(redis_url: str) -> Iterator[str]:
    """The test Redis as an ACL user allowed every key and command but no pub/sub channel."""
    user, password = f"nopubsub-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"],
        reset_channels=True,
    )
    try:
        server = admin.connection_pool.connection_kwargs
        yield f"redis://{user}:{password}@{server['host']}:{server['port']}/0"
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_redis_refusing_pubsub_falls_back_on_the_fetch_cycle(
    no_pubsub_url: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> None:
    """An ACL without channels: the projector does not listen, writers stop announcing."""
    settings = settings_factory(partitions=3, redis_url=no_pubsub_url)
    chatlog = chatlog_factory(settings)
    chatlog.producer
    projector = projector_factory(settings)
    assert projector.wakeups is None
    assert projector.consumer.config["fetch_max_wait_ms"] == settings.fetch_max_wait_ms
    written = _write_and_read_back(chatlog, projector, sessions=4, until_woken=False)
    _assert_applied_exactly_once(settings, chatlog, projector, written)
    publisher = chatlog.producer.wakeups
    assert publisher is not None
    publisher.close(timeout_s=None)  # its thread has tried every pending wake-up
    assert (publisher.enabled, publisher.published) == (False, 0)


def test_wakeups_reach_the_projector_on_a_redis_cluster(
    redis_cluster: EmbeddedRedisCluster,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> None:
    """PUBLISH on a cluster reaches the projector's subscription; the state is exact."""
    settings = settings_factory(partitions=3, redis_url=redis_cluster.url)
    chatlog = chatlog_factory(settings)
    chatlog.producer
    projector = projector_factory(settings)
    assert projector.wakeups is not None
    written = _write_and_read_back(chatlog, projector, sessions=4, until_woken=True)
    assert projector.stats.woken_records > 0
    for session_id, messages in written.items():
        assert chatlog.history(session_id, USER).messages == messages
    events = sum(end_offsets(settings, settings.topic).values())
    assert (projector.stats.applied, projector.stats.skipped) == (events, 0)
    client = open_redis(redis_cluster.url)
    delete_namespace_family(client, settings.namespace)
    client.close()
