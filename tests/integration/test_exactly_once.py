"""Idempotent appends by message id and optimistic concurrency, end to end.

The projector appends an id a session holds only once and applies a
conditional append all or none at its expected version; replay, rebuild and
verify reach the same verdicts from the log alone.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.errors import ConcurrentAppendError, InvalidTtlError, InvalidVersionError
from chatlog.histories.export import SessionExport
from chatlog.histories.importers import import_message_id, import_sessions
from chatlog.histories.messages import to_event
from chatlog.projector import Projector
from chatlog.projector.replay import Replayer
from chatlog.schemas.events import ChatEvent
from tests.helpers import eventually, unique, without_ids

SETTINGS_OVERRIDES = {"partitions": 2}
#: Rounds of the two-writer race.
ROUNDS = 500


def test_resent_messages_are_appended_once(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Ids are set on the caller's objects; sending the same objects again changes nothing."""
    session, user = unique("s"), unique("u")
    messages: list[BaseMessage] = [HumanMessage("hi"), AIMessage("hello")]
    history = module_chatlog.history(session, user)
    history.add_messages(messages)
    assert all(m.id for m in messages)
    history.add_messages(messages)
    # Another history object (as another process would) re-sends them too.
    module_chatlog.history(session, user).add_messages(messages)
    history.add_messages([HumanMessage("next")])
    assert history.messages[:2] == messages
    # The worker counts a batch's verdicts just after Redis applied it.
    eventually(lambda: module_projector.stats.deduplicated >= 4)
    assert module_projector.stats.dead_lettered == 0
    assert without_ids(history.messages) == [
        HumanMessage("hi"),
        AIMessage("hello"),
        HumanMessage("next"),
    ]


def test_a_repeated_id_keeps_the_first_content(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """The second message with an id the session holds is dropped, in a rebuild too."""
    session = unique("s")
    history = module_chatlog.history(session, unique("u"))
    history.add_messages([HumanMessage("first", id="m-1")])
    history.add_messages([HumanMessage("second", id="m-1"), HumanMessage("other", id="m-2")])
    assert [m.content for m in history.messages] == ["first", "other"]
    rebuilt = module_settings.namespace + "-dedupe"
    Replayer(module_settings).rebuild(rebuilt)
    live = module_chatlog.reader.keys.messages(session)
    assert redis_client.lrange(f"{rebuilt}:s:{{{session}}}:msgs", 0, -1) == redis_client.lrange(
        live, 0, -1
    )


def test_a_cleared_session_accepts_an_id_again(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Clear forgets the ids with the messages: the same message can start the session again."""
    history = module_chatlog.history(unique("s"), unique("u"))
    message = HumanMessage("again")
    history.add_messages([message])
    history.clear()
    history.add_messages([message])
    assert history.messages == [message]


def test_expected_version_appends_all_or_raises(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """At the right version all messages are appended; at another none, naming the version."""
    history = module_chatlog.history(unique("s"), unique("u"))
    assert history.version == 0
    history.add_messages([HumanMessage("a"), AIMessage("b")], expected_version=0)
    assert history.version == 2
    with pytest.raises(ConcurrentAppendError) as raised:
        history.add_messages([HumanMessage("c"), AIMessage("d")], expected_version=1)
    assert (raised.value.expected, raised.value.found) == (1, 2)
    assert "held 2 messages" in str(raised.value)
    assert [m.content for m in history.messages] == ["a", "b"]
    # A retry of an applied conditional call is a duplicate, not a conflict.
    sent: list[BaseMessage] = [HumanMessage("e")]
    history.add_messages(sent, expected_version=2)
    history.add_messages(sent, expected_version=2)
    assert history.version == 3


def test_async_expected_version(module_chatlog: ChatLog, module_projector: Projector) -> None:
    """aadd_messages and aget_version follow the same rules."""
    history = module_chatlog.history(unique("s"), unique("u"))

    async def scenario() -> None:
        await history.aadd_messages([HumanMessage("a")], expected_version=0)
        assert await history.aget_version() == 1
        with pytest.raises(ConcurrentAppendError):
            await history.aadd_messages([HumanMessage("b")], expected_version=0)

    asyncio.run(scenario())


def test_bad_versions_and_ttls_are_refused_before_publishing(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Values the projection could not apply are typed errors at the API."""
    history = module_chatlog.history(unique("s"), unique("u"))
    for version in (-1, 2**63, 1.0, True, "0"):
        with pytest.raises(InvalidVersionError):
            history.add_messages([HumanMessage("x")], expected_version=version)  # type: ignore[arg-type]
    for ttl in (9e15, -1, float("nan"), float("inf"), "10"):
        with pytest.raises(InvalidTtlError):
            history.set_ttl(ttl)  # type: ignore[arg-type]
    assert history.version == 0


def test_two_writers_racing_on_a_version_never_both_win(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """500 rounds of two writers at the same expected version: one wins, one conflicts."""
    session, user = unique("s"), unique("u")
    writers = [module_chatlog.history(session, user) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=60)
    outcomes: list[list[str]] = [[], []]

    def write(number: int) -> None:
        for round_ in range(ROUNDS):
            barrier.wait()
            try:
                writers[number].add_messages(
                    [HumanMessage(f"{round_}:{number}")], expected_version=round_
                )
                outcomes[number].append("won")
            except ConcurrentAppendError as exc:
                assert exc.found == round_ + 1
                outcomes[number].append("lost")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(len(o) == ROUNDS for o in outcomes)
    for round_ in range(ROUNDS):
        assert sorted((outcomes[0][round_], outcomes[1][round_])) == ["lost", "won"]
    contents = [m.content for m in writers[0].messages]
    assert len(contents) == ROUNDS
    assert [c.split(":")[0] for c in contents] == [str(r) for r in range(ROUNDS)]
    winners = [f"{r}:{0 if outcomes[0][r] == 'won' else 1}" for r in range(ROUNDS)]
    assert contents == winners
    # Rebuild and verify reach the same verdicts from the log alone.
    rebuilt = module_settings.namespace + "-exactly"
    replayer = Replayer(module_settings)
    replayer.rebuild(rebuilt)
    stored = [m.decode() for m in redis_client.lrange(f"{rebuilt}:s:{{{session}}}:msgs", 0, -1)]
    live = module_chatlog.reader.keys.messages(session)
    assert stored == [m.decode() for m in redis_client.lrange(live, 0, -1)]
    assert replayer.verify(rebuilt).ok
    assert replayer.verify().ok


def test_an_import_rerun_after_a_crash_sends_each_message_once(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """A run that published part of a session and died, then two full runs: each message once."""
    session, user = unique("s"), unique("u")
    source = SessionExport(session, user, (HumanMessage("q"), AIMessage("a"), HumanMessage("q2")))
    # What the crashed run left in the log: the first two messages, with their import ids.
    crashed = [
        m.model_copy(update={"id": import_message_id(session, n)})
        for n, m in enumerate(source.messages[:2])
    ]
    module_chatlog.producer.publish(
        [ChatEvent(session, to_event(m), user_id=user) for m in crashed]
    )
    for _ in range(2):
        import_sessions(module_chatlog, [source])
    history = module_chatlog.history(session, user)
    assert without_ids(history.messages) == [HumanMessage("q"), AIMessage("a"), HumanMessage("q2")]
    assert [m.id for m in history.messages] == [import_message_id(session, n) for n in range(3)]
