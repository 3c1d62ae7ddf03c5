"""Redis Cluster changes under load: a primary killed (its replica promoted), slots resharded.

Appends and projection run throughout; afterwards every acknowledged append
is in the read model exactly once and in order, and the user index lists
every session. Each test starts a cluster of its own (it damages it) and
stops after a fixed number of append rounds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import redis
from redis.cluster import RedisCluster

from chatlog import ChatLog
from chatlog.cli.devstack import EmbeddedRedisCluster
from chatlog.keys import ReadModelKeys
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector import Projector
from chatlog.projector.cluster_projection import TOPOLOGY_ERRORS
from chatlog.redis_clients import open_redis
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, reconcile, wait_caught_up

T = TypeVar("T")

SESSIONS = [f"topology-{n:03d}" for n in range(60)]
USER = "topology-user"
ROUNDS = 40  # one append per session each round
PAUSE_S = 0.05  # between rounds: the appends span the topology change


def _write(producer: EventProducer, ledger: Ledger, done: threading.Event) -> None:
    try:
        for number in range(ROUNDS):
            events = [message_event(s, f"{s}#{number}", user_id=USER) for s in SESSIONS]
            ledger.record(events, producer.publish(events))
            time.sleep(PAUSE_S)
    finally:
        done.set()


def _while_settling(client: Any, action: Callable[[], T], timeout_s: float = 90.0) -> T:
    """Run ``action`` again while the cluster still fails over (a node gone, a slot unserved).

    A cluster pipeline does not reload the slot map after a connection error:
    reload it here, as a reader following the topology does.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except (redis.ConnectionError, *TOPOLOGY_ERRORS):
            assert time.monotonic() < deadline, "the cluster did not settle"
            time.sleep(0.2)
            with contextlib.suppress(redis.RedisError, *TOPOLOGY_ERRORS):
                client.nodes_manager.initialize()


def _run_under_load(
    settings: Settings, cluster: EmbeddedRedisCluster, change: Callable[[], None], scenario: str
) -> None:
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    client = open_redis(cluster.nodes[1].url)
    ledger = Ledger()
    done = threading.Event()
    with EventProducer(settings) as producer, Projector(settings).running():
        writer = threading.Thread(target=_write, args=(producer, ledger, done))
        writer.start()
        deadline = time.monotonic() + 60
        while ledger.acknowledged < len(SESSIONS) * 5:
            assert time.monotonic() < deadline and writer.is_alive(), "the appends did not start"
            time.sleep(0.02)
        change()
        writer.join(timeout=120)
        assert done.is_set(), "the writer did not finish"
        namespace = settings.namespace
        _while_settling(client, lambda: wait_caught_up(client, namespace, ledger, timeout_s=120))
        figures = _while_settling(client, lambda: reconcile(scenario, client, namespace, ledger))
        print(figures.line())
        figures.assert_exact()
        assert figures.acknowledged == ROUNDS * len(SESSIONS)
        # REDIS_URL names any node: a live one (the first may be the one killed).
        with ChatLog(settings.with_(redis_url=cluster.nodes[1].url)) as chatlog:
            listed = chatlog.sessions(USER)
        assert sorted(s.session_id for s in listed) == SESSIONS
        assert all(s.message_count == ROUNDS for s in listed)
    client.close()


@pytest.mark.slow
def test_a_primary_killed_under_load_loses_and_duplicates_nothing(
    settings_factory: Callable[..., Settings], own_cluster: EmbeddedRedisCluster
) -> None:
    """SIGKILL a primary mid-run: the projector retries, its replica takes over, all exact."""
    settings = settings_factory(redis_url=own_cluster.url, partitions=4)
    victim = own_cluster.nodes[0]
    _run_under_load(settings, own_cluster, lambda: own_cluster.kill(victim), "cluster-failover")
    client = RedisCluster.from_url(own_cluster.nodes[1].url)
    try:
        ports = sorted(node.port for node in client.get_primaries())
    finally:
        client.close()
    assert len(ports) == 3 and victim.port not in ports


@pytest.mark.slow
def test_slots_resharded_under_load_lose_and_duplicate_nothing(
    settings_factory: Callable[..., Settings], own_cluster: EmbeddedRedisCluster
) -> None:
    """Move the slots of a third of the sessions to another primary while appends run."""
    settings = settings_factory(redis_url=own_cluster.url, partitions=4)
    keys = ReadModelKeys(settings.namespace)
    probe = RedisCluster.from_url(own_cluster.url)
    slots = sorted({probe.keyslot(keys.meta(s)) for s in SESSIONS[::3]})
    probe.close()
    moved: list[int] = []

    def reshard() -> None:
        for slot in slots:
            source = own_cluster.primary_of(slot)
            target = next(n for n in own_cluster.nodes[:3] if n is not source)
            moved.append(own_cluster.move_slot(slot, target))
            assert own_cluster.primary_of(slot) is target

    _run_under_load(settings, own_cluster, reshard, "cluster-reshard")
    assert len(moved) == len(slots) and sum(moved) > 0
