"""Three projector processes share a group; one is SIGKILLed and another added mid-stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, reconcile, wait_caught_up
from tests.faults.positions import applied_count
from tests.faults.processes import ProjectorProcess

SESSIONS = [f"group-{n:03d}" for n in range(120)]
BURSTS = 40  # each burst: 2 events of every session (9 600 events in all)
PACE_S = 0.4


def _wait_progress(client: redis.Redis, settings: Settings, beyond: int) -> int:
    deadline = time.monotonic() + 60
    while (count := applied_count(client, settings.namespace, SESSIONS)) <= beyond:
        assert time.monotonic() < deadline, "the group stopped applying"
        time.sleep(0.05)
    return count


@pytest.mark.slow
def test_three_workers_survive_one_killed_and_one_added_with_exact_state(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Kill -9 one of three group members and add a fourth during the stream: exact read model."""
    settings = settings_factory(max_poll_records=500, consumer_session_timeout_ms=4000)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    workers = [ProjectorProcess(settings, tmp_path / f"worker-{n}.log").start() for n in range(3)]
    ledger = Ledger()
    done = threading.Event()
    errors: list[BaseException] = []

    def stream(producer: EventProducer) -> None:
        try:
            for burst in range(BURSTS):
                events = [
                    message_event(session, f"{session}#{burst}.{n}")
                    for n in range(2)
                    for session in SESSIONS
                ]
                ledger.record(events, producer.publish(events))
                time.sleep(PACE_S)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    try:
        with EventProducer(settings) as producer:
            streamer = threading.Thread(target=stream, args=(producer,), daemon=True)
            streamer.start()
            applied = _wait_progress(redis_client, settings, 0)
            workers[0].kill()
            applied = _wait_progress(redis_client, settings, applied)
            workers.append(ProjectorProcess(settings, tmp_path / "worker-3.log").start())
            applied = _wait_progress(redis_client, settings, applied)
            streamer.join(timeout=120)
            assert done.is_set() and not errors, errors
            wait_caught_up(redis_client, settings.namespace, ledger)
        alive = sum(worker.alive for worker in workers)
    finally:
        codes = [worker.terminate() for worker in workers[1:]]
        workers[0].kill()
    figures = reconcile(
        "three-workers-one-killed-one-added",
        redis_client,
        settings.namespace,
        ledger,
        workers_started=len(workers),
        workers_killed=1,
        workers_alive_at_end=alive,
    )
    figures.assert_exact()
    assert figures.acknowledged == BURSTS * 2 * len(SESSIONS) == figures.applied
    assert alive == 3 and codes == [0, 0, 0], [w.log_tail() for w in workers]
    assert len(workers) == 4, figures.line()
