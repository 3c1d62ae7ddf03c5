"""The projector process is killed with SIGKILL mid-stream, again and again: nothing is lost."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from chatlog.keys import META_COUNT, ReadModelKeys
from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, reconcile, wait_caught_up
from tests.faults.positions import applied_count, applied_not_committed
from tests.faults.processes import ProjectorProcess

SESSIONS = 240
EVENTS_PER_SESSION = 100  # 24 000 events in all
BATCH_PER_SESSION = 2  # each publish is a burst of 2 events of every session
PACE_S = 1.0  # between bursts until the kills are done; then the rest goes at once
KILLS = 5


def _stream(producer: EventProducer, ledger: Ledger, sessions: list[str], done: threading.Event,
            killed: threading.Event, errors: list[BaseException]) -> None:
    try:
        for start in range(0, EVENTS_PER_SESSION, BATCH_PER_SESSION):
            events = [
                message_event(session, f"{session}#{n}")
                for n in range(start, start + BATCH_PER_SESSION)
                for session in sessions
            ]
            ledger.record(events, producer.publish(events))
            killed.wait(PACE_S)
    except BaseException as exc:
        errors.append(exc)
    finally:
        done.set()


def _wait_progress(client: redis.Redis, settings: Settings, sessions: list[str], beyond: int,
                   worker: ProjectorProcess) -> int:
    """Block until the worker applied more than ``beyond`` messages; return the count."""
    deadline = time.monotonic() + 60
    while True:
        count = applied_count(client, settings.namespace, sessions)
        if count > beyond:
            return count
        assert worker.alive, worker.log_tail()
        assert time.monotonic() < deadline, f"no progress after restart:\n{worker.log_tail()}"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkilled_projector_loses_and_duplicates_nothing(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis, tmp_path: Path
) -> None:
    """SIGKILL the projector 5 times during a 24k-event stream: read model == acknowledged log."""
    settings = settings_factory(max_poll_records=500, consumer_session_timeout_ms=4000)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    sessions = [f"kill9-{n:03d}" for n in range(SESSIONS)]
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    ledger = Ledger()
    done = threading.Event()
    killed = threading.Event()
    errors: list[BaseException] = []
    redelivered = 0
    mid_batch_kills = 0
    rejoins: list[float] = []
    worker = ProjectorProcess(settings, tmp_path / "projector.log").start()
    with EventProducer(settings) as producer:
        stream = threading.Thread(
            target=_stream, args=(producer, ledger, sessions, done, killed, errors), daemon=True
        )
        stream.start()
        try:
            applied = 0
            for _ in range(KILLS):
                started = time.monotonic()
                applied = _wait_progress(redis_client, settings, sessions, applied, worker)
                rejoins.append(time.monotonic() - started)
                # Kill the moment the worker is seen applying a fresh burst.
                sent = ledger.sent
                while ledger.sent == sent and not done.is_set():
                    time.sleep(0.005)
                # One session's count is watched in a tight loop: the worker
                # writes a batch's sessions in one pipeline and commits after
                # it, so the kill lands inside that batch's apply-commit window.
                watched = ReadModelKeys(settings.namespace).meta(rng.choice(sessions))
                before = redis_client.hget(watched, META_COUNT)
                deadline = time.monotonic() + 10
                while redis_client.hget(watched, META_COUNT) == before:
                    assert worker.alive, worker.log_tail()
                    if time.monotonic() > deadline:
                        break
                worker.kill()
                uncommitted = applied_not_committed(settings, redis_client, sessions)
                redelivered += uncommitted
                mid_batch_kills += uncommitted > 0
                applied = applied_count(redis_client, settings.namespace, sessions)
                worker.start()
            killed.set()
            stream.join(timeout=120)
            assert done.is_set() and not errors, errors
            wait_caught_up(redis_client, settings.namespace, ledger)
        finally:
            exit_code = worker.terminate()
    logged = sum(end_offsets(settings, settings.topic).values())
    figures = reconcile(
        "projector-sigkill",
        redis_client,
        settings.namespace,
        ledger,
        kills=KILLS,
        kills_between_apply_and_commit=mid_batch_kills,
        applied_but_uncommitted_at_kills=redelivered,
        events_in_log=logged,
        seconds_to_first_apply_after_start=f"{min(rejoins):.1f}-{max(rejoins):.1f}",
        seed=seed,
    )
    figures.assert_exact()
    assert figures.acknowledged == SESSIONS * EVENTS_PER_SESSION == logged
    # Each kill was aimed at a batch's apply-commit window; every one must have hit it
    # (left applied events uncommitted, which the restarted worker redelivered and skipped).
    assert mid_batch_kills == KILLS, figures.line()
    assert redelivered >= mid_batch_kills, figures.line()
    assert len(rejoins) == KILLS, figures.line()  # every restart applied again
    assert exit_code == 0, worker.log_tail()
