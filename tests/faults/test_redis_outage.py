"""Redis dies under the projector and comes back; later it is wiped and rebuilt from the log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector import Projector
from chatlog.projector.replay import Replayer
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, reconcile, wait_caught_up
from tests.faults.positions import committed_offsets
from tests.faults.processes import DurableRedis

SESSIONS = [f"outage-{n:03d}" for n in range(100)]
PER_PHASE = 10  # events per session in each phase
OUTAGE_S = 2.0


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    """A Redis of this test's own, which it may kill, restart and flush."""
    server = DurableRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def _publish_phase(producer: EventProducer, ledger: Ledger, phase: str) -> None:
    events = [
        message_event(session, f"{session}#{phase}{n}")
        for n in range(PER_PHASE)
        for session in SESSIONS
    ]
    ledger.record(events, producer.publish(events))


def _wait_committed(settings: Settings, timeout_s: float = 30.0) -> dict[int, int]:
    """Block until the group committed everything in the topic; return the offsets."""
    deadline = time.monotonic() + timeout_s
    while True:
        ends = {p: e for p, e in end_offsets(settings, settings.topic).items() if e > 0}
        committed = committed_offsets(settings)
        if all(committed.get(p) == e for p, e in ends.items()):
            return committed
        assert time.monotonic() < deadline, f"committed {committed}, log ends {ends}"
        time.sleep(0.1)


@pytest.mark.slow
def test_projector_rides_out_a_redis_crash_and_a_wipe_is_rebuilt_exactly(
    settings_factory: Callable[..., Settings], durable_redis: DurableRedis
) -> None:
    """Redis killed mid-projection: retries, no unapplied commit, self-recovery; wipe + rebuild."""
    settings = settings_factory(redis_url=durable_redis.url)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    client = redis.Redis.from_url(durable_redis.url)
    ledger = Ledger()
    with EventProducer(settings) as producer, Projector(settings).running() as projector:
        _publish_phase(producer, ledger, "a")
        wait_caught_up(client, settings.namespace, ledger)
        before_outage = _wait_committed(settings)

        durable_redis.kill()
        retries_before = projector.stats.retries
        _publish_phase(producer, ledger, "b")
        deadline = time.monotonic() + 30
        while projector.stats.retries < retries_before + 3:
            assert time.monotonic() < deadline, "the projector never retried the apply"
            time.sleep(0.05)
        samples = []
        for _ in range(4):
            samples.append(committed_offsets(settings))
            time.sleep(OUTAGE_S / 4)
        durable_redis.start()
        # Nothing of phase b may be committed while Redis could not store it.
        commits_moved = sum(sample != before_outage for sample in samples)
        assert commits_moved == 0, samples

        wait_caught_up(client, settings.namespace, ledger)
        _publish_phase(producer, ledger, "c")
        wait_caught_up(client, settings.namespace, ledger)
        _wait_committed(settings)
        retries = projector.stats.retries - retries_before
    figures = reconcile(
        "redis-killed-and-restarted",
        client,
        settings.namespace,
        ledger,
        outage_s=OUTAGE_S,
        apply_retries=retries,
        commit_samples_during_outage=len(samples),
        commits_moved_during_outage=commits_moved,
    )
    figures.assert_exact()
    assert figures.applied == 3 * PER_PHASE * len(SESSIONS)
    assert retries >= 3 and len(samples) == 4

    client.flushall()  # this Redis is the test's own
    assert reconcile("redis-wiped", client, settings.namespace, ledger).lost == ledger.acknowledged
    progress = Replayer(settings, redis_client=client).rebuild()
    rebuilt = reconcile(
        "redis-wiped-then-rebuilt", client, settings.namespace, ledger, replayed=progress.done
    )
    rebuilt.assert_exact()
    assert rebuilt.applied == ledger.acknowledged == progress.done
    assert progress.done == sum(end_offsets(settings, settings.topic).values())
    client.close()
