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
KILLS = 5  # kills that must land between a batch's apply and its commit
#: A kill that came after the commit (the test was descheduled) is repeated, up to this many.
MAX_KILLS = 3 * KILLS


def _stream(producer: EventProducer, ledger: Ledger, sessions: list[str], done: threading.Event,
            killed: threading.Event, wanted: threading.Semaphore,
            errors: list[BaseException]) -> None:
    """Publish a burst each time the test asks for one, until the kills are done; then the rest."""
    try:
        for start in range(0, EVENTS_PER_SESSION, BATCH_PER_SESSION):
            while not killed.is_set() and not wanted.acquire(timeout=0.05):
                pass
            events = [
                message_event(session, f"{session}#{n}")
                for n in range(start, start + BATCH_PER_SESSION)
                for session in sessions
            ]
            ledger.record(events, producer.publish(events))
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
    """SIGKILL the projector mid-batch 5 times in a 24k-event stream: read model == the log."""
    settings = settings_factory(max_poll_records=500, consumer_session_timeout_ms=4000)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    sessions = [f"kill9-{n:03d}" for n in range(SESSIONS)]
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    ledger = Ledger()
    done = threading.Event()
    killed = threading.Event()
    wanted = threading.Semaphore(0)
    errors: list[BaseException] = []
    redelivered = 0
    kills = mid_batch_kills = 0
    rejoins: list[float] = []
    worker = ProjectorProcess(settings, tmp_path / "projector.log").start()
    with EventProducer(settings) as producer:
        stream = threading.Thread(
            target=_stream,
            args=(producer, ledger, sessions, done, killed, wanted, errors),
            daemon=True,
        )
        stream.start()
        try:
            applied = 0
            while mid_batch_kills < KILLS:
                assert kills < MAX_KILLS, f"only {mid_batch_kills} of {kills} kills hit a batch"
                started = time.monotonic()
                wanted.release()  # a burst for the (re)started worker to apply
                applied = _wait_progress(redis_client, settings, sessions, applied, worker)
                rejoins.append(time.monotonic() - started)
                # One session's count is watched in a tight loop while the next burst
                # goes out: the worker writes a batch's sessions in one pipeline and
                # commits after it, so the kill lands inside that batch's
                # apply-commit window, unless this process was descheduled meanwhile.
                watched = ReadModelKeys(settings.namespace).meta(rng.choice(sessions))
                before = redis_client.hget(watched, META_COUNT)
                wanted.release()
                deadline = time.monotonic() + 30
                while redis_client.hget(watched, META_COUNT) == before:
                    assert worker.alive, worker.log_tail()
                    assert time.monotonic() < deadline, "the burst was never applied"
                worker.kill()
                kills += 1
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
        kills=kills,
        kills_between_apply_and_commit=mid_batch_kills,
        applied_but_uncommitted_at_kills=redelivered,
        events_in_log=logged,
        seconds_to_first_apply_after_start=f"{min(rejoins):.1f}-{max(rejoins):.1f}",
        seed=seed,
    )
    figures.assert_exact()
    assert figures.acknowledged == SESSIONS * EVENTS_PER_SESSION == logged
    # KILLS kills hit a batch's apply-commit window (left applied events uncommitted,
    # which the restarted worker redelivered and skipped); a kill that missed was repeated.
    assert mid_batch_kills == KILLS <= kills <= MAX_KILLS, figures.line()
    assert redelivered >= mid_batch_kills, figures.line()
    assert len(rejoins) == kills, figures.line()  # every restart applied again
    assert exit_code == 0, worker.log_tail()
