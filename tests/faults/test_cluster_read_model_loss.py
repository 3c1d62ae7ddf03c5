"""One primary of a Redis Cluster loses its data under a live projector, and the read model heals.

Loss detection per node (issue 19, with issue 14's rules): writers keep
appending to sessions spread over every primary while one primary is flushed
(``FLUSHALL``, which its replica follows): first the primary holding the
owner's session index but not the namespace's generation key (found by the
slot markers), then, once that repair is done, the primary holding the
generation key. A reader samples sessions the whole time: every history it
got is a prefix of the session's final one (or a wait, or
ReadModelRepairingError). Afterwards every session is exact and the owner's
listing holds every session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from chatlog import ChatLog
from chatlog.cli.devstack import EmbeddedRedis, EmbeddedRedisCluster
from chatlog.keys import ReadModelKeys, key_slot
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector import Projector
from chatlog.redis_clients import open_redis
from chatlog.settings import Settings
from tests.faults.ledger import (
    Ledger,
    SampledReads,
    message_event,
    reconcile,
    sample_histories,
    wait_caught_up,
)
from tests.helpers import eventually

SESSIONS = [f"slot-loss-{n:03d}" for n in range(60)]
ROUNDS = 30  # one append per session each round
PAUSE_S = 0.05  # between rounds: the appends span both losses
READ_TIMEOUT_S = 3.0


def _write(producer: EventProducer, ledger: Ledger, user: str, done: threading.Event,
           errors: list[BaseException]) -> None:
    try:
        for number in range(ROUNDS):
            events = [message_event(s, f"{s}#{number}", user_id=user) for s in SESSIONS]
            ledger.record(events, producer.publish(events))
            time.sleep(PAUSE_S)
    except BaseException as exc:
        errors.append(exc)
    finally:
        done.set()


def _owner_away_from_generation(
    cluster: EmbeddedRedisCluster, keys: ReadModelKeys
) -> tuple[str, EmbeddedRedis, EmbeddedRedis]:
    """A user whose index key's primary is not the generation's; both primaries."""
    generation_primary = cluster.primary_of(key_slot(keys.generation()))
    for number in range(100):
        user = f"slot-loss-user-{number}"
        primary = cluster.primary_of(key_slot(keys.user_sessions(user)))
        if primary is not generation_primary:
            return user, primary, generation_primary
    raise AssertionError("no user id maps away from the generation's primary")


@pytest.mark.slow
def test_a_primary_that_loses_its_data_is_detected_and_repaired_with_no_truncated_read(
    settings_factory: Callable[..., Settings], own_cluster: EmbeddedRedisCluster
) -> None:
    """FLUSHALL one primary, then the generation's primary, mid-stream: two repairs, all exact."""
    settings = settings_factory(redis_url=own_cluster.url, partitions=4)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    namespace = settings.namespace
    keys = ReadModelKeys(namespace)
    user, first_victim, second_victim = _owner_away_from_generation(own_cluster, keys)
    slots = {key_slot(keys.meta(s)) for s in SESSIONS}
    served_by = {own_cluster.primary_of(slot).port for slot in slots}
    assert len(served_by) == 3  # the sessions live on every primary
    client = open_redis(own_cluster.url)
    ledger = Ledger()
    done = threading.Event()
    errors: list[BaseException] = []
    reads = SampledReads()
    stop_reading = threading.Event()
    with EventProducer(settings) as producer, Projector(settings).running() as projector:
        writer = threading.Thread(target=_write, args=(producer, ledger, user, done, errors))
        reader = threading.Thread(
            target=sample_histories,
            args=(settings.with_(read_timeout_s=READ_TIMEOUT_S), SESSIONS, reads, stop_reading),
            kwargs={"seed": 19, "user_id": user},
        )
        writer.start()
        reader.start()
        eventually(lambda: ledger.acknowledged >= len(SESSIONS) * 8, timeout_s=120)
        # The projector wrote to the victim's slots: their markers and index are there.
        eventually(lambda: int(client.zcard(keys.user_sessions(user))) > 0, timeout_s=120)
        lost_at = time.monotonic()
        with redis.Redis(port=first_victim.port) as node:
            assert node.dbsize() > 0
            node.flushall()
        eventually(lambda: projector.stats.namespace_repairs >= 1, timeout_s=120)
        first_repair_s = time.monotonic() - lost_at
        assert not done.is_set(), "the appends ended before the second loss"
        with redis.Redis(port=second_victim.port) as node:
            assert node.exists(keys.generation()) == 1
            node.flushall()
        writer.join(timeout=120)
        assert done.is_set() and not errors, errors
        wait_caught_up(client, namespace, ledger, timeout_s=120)
        stop_reading.set()
        reader.join(timeout=60)
        stats = projector.stats
        figures = reconcile(
            "cluster-primary-flushed",
            client,
            namespace,
            ledger,
            namespace_repairs=stats.namespace_repairs,
            first_repair_s=round(first_repair_s, 2),
            reads=reads.total,
            reads_refused=reads.refused,
            truncated_reads=len(reads.truncated(ledger)),
        )
        with ChatLog(settings) as chatlog:
            listed = chatlog.sessions(user)
    client.close()
    assert not reads.errors, reads.errors
    figures.assert_exact()
    assert figures.acknowledged == figures.applied == ROUNDS * len(SESSIONS)
    assert stats.namespace_repairs == 2, figures.line()
    assert figures.extra["truncated_reads"] == 0, figures.line()
    assert figures.extra["reads"] > 0
    assert sorted(s.session_id for s in listed) == SESSIONS
    assert all(s.message_count == ROUNDS for s in listed)


def test_a_session_key_deleted_on_a_cluster_is_found_by_its_next_event_and_rebuilt(
    settings_factory: Callable[..., Settings], redis_cluster: EmbeddedRedisCluster
) -> None:
    """The hole rule runs in the cluster's apply calls too: a meta deleted, then an event."""
    settings = settings_factory(redis_url=redis_cluster.url, partitions=2)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    client = open_redis(redis_cluster.url)
    keys = ReadModelKeys(settings.namespace)
    ledger = Ledger()
    with (
        EventProducer(settings) as producer,
        Projector(settings).running() as projector,
        ChatLog(settings.with_(read_timeout_s=30.0)) as chatlog,
    ):
        events = [message_event("holed", f"holed#{n}", user_id="holder") for n in range(5)]
        ledger.record(events, producer.publish(events))
        wait_caught_up(client, settings.namespace, ledger)
        assert client.delete(keys.meta("holed")) == 1
        more = [message_event("holed", "holed#5", user_id="holder")]
        ledger.record(more, producer.publish(more))
        wait_caught_up(client, settings.namespace, ledger)
        texts = [str(m.content) for m in chatlog.history("holed", user_id="holder").messages]
        repairs = (projector.stats.session_repairs, projector.stats.namespace_repairs)
    client.close()
    assert texts == ledger.expected("holed")
    assert repairs == (1, 0)
