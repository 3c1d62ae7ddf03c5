"""The broker stops answering during appends: typed errors in bounded time, no false success."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from langchain_core.messages import HumanMessage

from chatlog import ChatLog
from chatlog.cli.devstack import EmbeddedBroker
from chatlog.errors import ChatLogError, PublishError
from chatlog.producers.admin import end_offsets
from chatlog.projector import Projector
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, reconcile, wait_caught_up

PUBLISH_TIMEOUT_S = 3.0
#: The documented worst case for one refused append (docs/reliability.md): about twice
#: CHATLOG_PUBLISH_TIMEOUT, a fresh producer's bootstrap and then the send.
REFUSAL_BOUND_S = 2 * PUBLISH_TIMEOUT_S
#: Stated margin over that bound: thread start-up and scheduling of 10 threads on a
#: loaded 2-core machine, and closing the timed-out producer before the error is raised.
MARGIN_S = 2.0
SESSIONS = [f"broker-outage-{n}" for n in range(8)]


def _append(chatlog: ChatLog, ledger: Ledger, session_id: str, text: str) -> None:
    """One message per call, so the acknowledged position is the session's newest."""
    chatlog.history(session_id).add_messages([HumanMessage(text)])
    position = chatlog.written.get(session_id)
    assert position is not None
    ledger.record_texts(session_id, [text], [(position.partition, position.offset)])


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["kafka-python", "confluent"])
def test_appends_fail_typed_and_bounded_while_the_broker_is_frozen_then_succeed(
    transport: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    own_broker: EmbeddedBroker,
    redis_client: redis.Redis,
) -> None:
    """SIGSTOPped broker: PublishError within the publish timeout; after SIGCONT appends work.

    On both producer transports: the kafka-python default and confluent-kafka.
    """
    settings = settings_factory(
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        publish_timeout_s=PUBLISH_TIMEOUT_S,
        transport=transport,
    )
    chatlog = chatlog_factory(settings)
    ledger = Ledger()
    for session_id in SESSIONS:
        _append(chatlog, ledger, session_id, f"{session_id}#before")

    failures: list[tuple[str, BaseException, float]] = []
    successes: list[str] = []
    lock = threading.Lock()

    def attempt(owner: ChatLog, session_id: str, text: str) -> None:
        started = time.monotonic()
        try:
            _append(owner, ledger, session_id, text)
        except BaseException as exc:
            with lock:
                failures.append((text, exc, time.monotonic() - started))
        else:
            with lock:
                successes.append(text)

    own_broker.pause()
    try:
        # Appends from a process that was already connected, and from one that
        # starts during the outage and has to bootstrap first.
        late = ChatLog(settings)
        threads = [
            threading.Thread(target=attempt, args=(chatlog, s, f"{s}#during")) for s in SESSIONS
        ] + [threading.Thread(target=attempt, args=(late, SESSIONS[0], f"{SESSIONS[0]}#late"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Far beyond the bound: only a hang (not a slow refusal) can reach it.
            thread.join(timeout=10 * REFUSAL_BOUND_S)
        assert not any(t.is_alive() for t in threads), "an append hung past every timeout"
    finally:
        own_broker.resume()
    late.close()
    assert not successes, f"reported success while the broker was frozen: {successes}"
    assert len(failures) == len(SESSIONS) + 1
    for text, exc, _ in failures:
        assert isinstance(exc, ChatLogError), (text, repr(exc))
        if not text.endswith("#late"):
            assert isinstance(exc, PublishError), (text, repr(exc))
    ledger.record_failure(len(failures))
    slowest = max(elapsed for _, _, elapsed in failures)
    assert slowest <= REFUSAL_BOUND_S + MARGIN_S, sorted(
        (round(elapsed, 2), text) for text, _, elapsed in failures
    )

    for session_id in SESSIONS:
        _append(chatlog, ledger, session_id, f"{session_id}#after")
    with Projector(settings).running():
        wait_caught_up(redis_client, settings.namespace, ledger)
    figures = reconcile(
        f"broker-frozen-during-appends ({transport})",
        redis_client,
        settings.namespace,
        ledger,
        publish_timeout_s=PUBLISH_TIMEOUT_S,
        slowest_failure_s=round(slowest, 1),
        events_in_log=sum(end_offsets(settings, settings.topic).values()),
    )
    # A refused append may still have reached the log (the broker can write it
    # after the timeout); what must never happen is a success that is missing.
    assert (figures.lost, figures.duplicated, figures.out_of_order_sessions) == (0, 0, 0)
    assert figures.acknowledged == 2 * len(SESSIONS)
    assert figures.sent == figures.acknowledged + figures.failed == 3 * len(SESSIONS) + 1
    # What reached the log: every acknowledged append, and at most every refused one.
    in_log = figures.extra["events_in_log"]
    assert figures.acknowledged <= in_log <= figures.sent, figures.line()
    assert figures.applied == in_log, figures.line()
