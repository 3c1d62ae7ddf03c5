"""The read model loses state under a live projector and heals itself from the log.

Four writers keep appending to 200 sessions while Redis is flushed, or
killed and restarted empty; a reader samples sessions the whole time. Every
history it got must be a prefix of the session's final history (a read may
also wait, or refuse with ReadModelRepairingError), and every session must
be complete again once the writers are done. Single keys deleted behind the
projector's back are found by the next read or the next event and repaired.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from chatlog.errors import ConfigurationError, ReadModelRepairingError
from chatlog.histories.store import ChatLog
from chatlog.keys import ReadModelKeys
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector import Projector
from chatlog.settings import Settings
from tests.faults.ledger import (
    Ledger,
    SampledReads,
    message_event,
    reconcile,
    sample_histories,
    wait_caught_up,
)
from tests.faults.processes import DurableRedis

SESSIONS = [f"heal-{n:03d}" for n in range(200)]
WRITERS = 4
EVENTS_PER_SESSION = 100  # 20 000 events in all
LOSS_AFTER = 10_000  # acknowledged appends before the loss
READ_TIMEOUT_S = 3.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    """A redis-server of this test's own that keeps nothing: a restart comes back empty."""
    server = DurableRedis(tmp_path / "redis", persistent=False).start()
    yield server
    server.stop()


def _write(settings: Settings, ledger: Ledger, sessions: list[str], errors: list[BaseException],
           pace: threading.Event) -> None:
    """Append EVENTS_PER_SESSION messages to each session, one round of all sessions at a time."""
    try:
        with EventProducer(settings) as producer:
            for n in range(EVENTS_PER_SESSION):
                events = [message_event(s, f"{s}#{n}") for s in sessions]
                ledger.record(events, producer.publish(events))
                pace.wait(0.01)
    except BaseException as exc:
        errors.append(exc)


def _run_loss(settings: Settings, client: redis.Redis, lose: Callable[[], None],
              scenario: str) -> None:
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ledger = Ledger()
    errors: list[BaseException] = []
    reads = SampledReads()
    stop_reading = threading.Event()
    pace = threading.Event()
    share = len(SESSIONS) // WRITERS
    writers = [
        threading.Thread(
            target=_write,
            args=(settings, ledger, SESSIONS[i * share : (i + 1) * share], errors, pace),
        )
        for i in range(WRITERS)
    ]
    reader = threading.Thread(
        target=sample_histories,
        args=(settings.with_(read_timeout_s=READ_TIMEOUT_S), SESSIONS, reads, stop_reading),
        kwargs={"seed": 14},
    )
    with Projector(settings).running() as projector:
        for thread in [*writers, reader]:
            thread.start()
        deadline = time.monotonic() + 120
        while ledger.acknowledged < LOSS_AFTER:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.02)
        lost_at = time.monotonic()
        lose()
        for thread in writers:
            thread.join(timeout=300)
        assert not errors, errors
        wait_caught_up(client, settings.namespace, ledger, timeout_s=180)
        recovered_s = time.monotonic() - lost_at
        stop_reading.set()
        reader.join(timeout=60)
        stats = projector.stats
    assert not reads.errors, reads.errors
    bad = [
        _mismatch(session, texts, ledger.expected(session))
        for session, texts in reads.truncated(ledger)
    ]
    truncated = len(bad)
    figures = reconcile(
        scenario,
        client,
        settings.namespace,
        ledger,
        namespace_repairs=stats.namespace_repairs,
        repair_s=round(stats.repair_seconds, 2),
        recovered_s=round(recovered_s, 2),
        reads=len(reads.served) + reads.refused + reads.unavailable,
        reads_refused=reads.refused,
        reads_unavailable=reads.unavailable,
        truncated_reads=truncated,
    )
    figures.assert_exact()
    assert figures.sent == figures.acknowledged == len(SESSIONS) * EVENTS_PER_SESSION
    assert figures.applied == figures.acknowledged
    assert stats.namespace_repairs == 1, figures.line()
    assert figures.extra["repair_s"] == round(stats.repair_seconds, 2)
    # Not compared with repair_s: the rebuild catches every session up before
    # the repair ends (it replays checkpoints after), so either may be larger.
    assert figures.extra["recovered_s"] == round(recovered_s, 2)
    assert truncated == 0, (figures.line(), bad[:5])
    assert figures.extra["reads"] == len(reads.served) + reads.refused + reads.unavailable > 0
    assert reads.refused >= 0 and reads.unavailable >= 0


def _mismatch(session: str, texts: list[str], expected: list[str]) -> str:
    """Where a served history first left the final one, for the failure message."""
    at = min(len(texts), len(expected))
    for n, (got, want) in enumerate(zip(texts, expected, strict=False)):
        if got != want:
            at = n
            break
    return (
        f"{session}: served {len(texts)} of {len(expected)}, first difference at {at}: "
        f"served {texts[max(at - 2, 0) : at + 3]}, expected {expected[max(at - 2, 0) : at + 3]}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["flushall", "restart-empty"])
def test_lost_redis_under_live_projector_is_repaired_and_no_read_is_truncated(
    settings_factory: Callable[..., Settings], own_redis: DurableRedis, scenario: str
) -> None:
    """FLUSHALL, or redis-server SIGKILLed and restarted empty on its port, mid-stream.

    One namespace repair, every session exact, no truncated read.
    """
    settings = settings_factory(redis_url=own_redis.url)
    client = redis.Redis.from_url(own_redis.url)

    def restart_empty() -> None:
        own_redis.kill()
        own_redis.start()

    _run_loss(settings, client, client.flushall if scenario == "flushall" else restart_empty,
              scenario)


def _texts(chatlog: ChatLog, session: str) -> list[str]:
    return [str(m.content) for m in chatlog.history(session).messages]


def test_single_deleted_keys_are_found_by_the_next_read_or_event_and_repaired(
    settings_factory: Callable[..., Settings], own_redis: DurableRedis
) -> None:
    """One session's list, then another's meta hash, deleted behind the projector's back.

    The list: the next read waits for the repair it asked for. The meta: the
    next event of the session finds the hole, and the session is rebuilt first.
    """
    settings = settings_factory(redis_url=own_redis.url, read_timeout_s=30.0)
    client = redis.Redis.from_url(own_redis.url)
    keys = ReadModelKeys(settings.namespace)
    ledger = Ledger()
    with (
        EventProducer(settings) as producer,
        Projector(settings).running() as projector,
        ChatLog(settings) as chatlog,
    ):
        events = [message_event(s, f"{s}#{n}") for n in range(5) for s in ("one", "two")]
        ledger.record(events, producer.publish(events))
        wait_caught_up(client, settings.namespace, ledger)

        assert client.delete(keys.messages("one")) == 1
        assert _texts(chatlog, "one") == ledger.expected("one")  # waited for the repair
        after_read = projector.stats.session_repairs
        assert after_read == 1

        assert client.delete(keys.meta("two")) == 1
        more = [message_event("two", "two#5")]
        ledger.record(more, producer.publish(more))
        wait_caught_up(client, settings.namespace, ledger)
        assert _texts(chatlog, "two") == ledger.expected("two")
        assert projector.stats.session_repairs == after_read + 1
        assert projector.stats.namespace_repairs == 0
    figures = reconcile(
        "single-keys", client, settings.namespace, ledger,
        session_repairs=projector.stats.session_repairs,
    )
    figures.assert_exact()
    assert figures.extra["session_repairs"] == 2


def test_a_session_with_a_hole_is_refused_not_served_short_without_a_projector(
    settings_factory: Callable[..., Settings], own_redis: DurableRedis
) -> None:
    """With no projector to repair it, a hole is a ReadModelRepairingError, never a short list."""
    settings = settings_factory(redis_url=own_redis.url, read_timeout_s=0.5)
    client = redis.Redis.from_url(own_redis.url)
    ledger = Ledger()
    with EventProducer(settings) as producer, Projector(settings).running():
        events = [message_event("alone", f"alone#{n}") for n in range(3)]
        ledger.record(events, producer.publish(events))
        wait_caught_up(client, settings.namespace, ledger)
    client.lpop(ReadModelKeys(settings.namespace).messages("alone"))
    with ChatLog(settings) as chatlog, pytest.raises(ReadModelRepairingError) as raised:
        _texts(chatlog, "alone")
    assert "CHATLOG_READ_TIMEOUT" in str(raised.value)
    assert client.smembers(ReadModelKeys(settings.namespace).repair_requests()) == {b"alone"}


@pytest.mark.parametrize(
    ("policy", "ttl_s", "allowed"),
    [
        ("allkeys-lru", None, False),
        ("allkeys-random", None, False),
        ("volatile-lru", 3600.0, False),
        ("volatile-lru", None, True),
        ("noeviction", 3600.0, True),
    ],
)
def test_an_evicting_maxmemory_policy_is_refused_unless_allowed(
    settings_factory: Callable[..., Settings],
    own_redis: DurableRedis,
    policy: str,
    ttl_s: float | None,
    allowed: bool,
) -> None:
    """ChatLog and the projector refuse a policy that can evict chatlog's keys, unless allowed."""
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", policy)
    settings = settings_factory(redis_url=own_redis.url, session_ttl_s=ttl_s)
    if allowed:
        ChatLog(settings).close()
    else:
        with pytest.raises(ConfigurationError) as refused:
            ChatLog(settings)
        assert "maxmemory-policy" in str(refused.value)
        assert "CHATLOG_ALLOW_EVICTION=true" in str(refused.value)
        with pytest.raises(ConfigurationError):
            Projector(settings).run()
    tolerant = settings.with_(allow_eviction=True)
    ChatLog(tolerant).close()
    with Projector(tolerant).running() as projector:
        assert projector.assignment()



def test_a_listing_waits_for_a_namespace_repair_and_then_refuses(
    settings_factory: Callable[..., Settings], own_redis: DurableRedis
) -> None:
    """ChatLog.sessions never lists a namespace half-rebuilt: it waits, then refuses."""
    settings = settings_factory(redis_url=own_redis.url, read_timeout_s=0.5)
    client = redis.Redis.from_url(own_redis.url)
    keys = ReadModelKeys(settings.namespace)
    with ChatLog(settings) as chatlog, Projector(settings).running():
        chatlog.history("listed", user_id="ann").add_user_message("hi")
        assert [s.session_id for s in chatlog.sessions("ann")] == ["listed"]
        # A repair in progress, as the projector marks it (with its expiry).
        client.set(keys.repairing(), "someone", px=30_000)
        with pytest.raises(ReadModelRepairingError) as refused:
            chatlog.sessions("ann")
        assert "CHATLOG_READ_TIMEOUT" in str(refused.value)
        with pytest.raises(ReadModelRepairingError):
            chatlog.sessions("ann", limit=10)
        with pytest.raises(ReadModelRepairingError):
            asyncio.run(chatlog.asessions("ann"))
        # The repair ends while a listing waits: the listing is served.
        patient = ChatLog(settings.with_(read_timeout_s=30.0))
        try:
            ended = threading.Timer(0.3, lambda: client.delete(keys.repairing()))
            ended.start()
            assert [s.session_id for s in patient.sessions("ann")] == ["listed"]
            ended.join()
        finally:
            patient.close()
