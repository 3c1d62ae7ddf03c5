"""Sessions and users end to end: ownership, listing, windows, TTL, delete, replay."""

from __future__ import annotations

import time

import pytest
import redis
from kafka import KafkaConsumer
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.errors import InvalidUserIdError, SessionOwnershipError
from chatlog.histories.messages import to_event
from chatlog.projector import Projector
from chatlog.projector.replay import Replayer
from chatlog.schemas.events import ChatEvent
from tests.helpers import eventually, unique, without_ids

SETTINGS_OVERRIDES = {"partitions": 4}


def test_another_user_cannot_read_or_write_an_owned_session(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """The first writer owns the session; another user id or none is refused on read and write."""
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    mine = module_chatlog.history(session, alice)
    mine.add_messages([HumanMessage("secret")])
    assert without_ids(mine.messages) == [HumanMessage("secret")]
    for intruder in (module_chatlog.history(session, bob), module_chatlog.history(session)):
        with pytest.raises(SessionOwnershipError):
            intruder.messages
        with pytest.raises(SessionOwnershipError):
            intruder.last(1)
        with pytest.raises(SessionOwnershipError):
            intruder.add_messages([HumanMessage("mine now")])
        with pytest.raises(SessionOwnershipError):
            intruder.clear()
        with pytest.raises(SessionOwnershipError):
            module_chatlog.delete_session(session, intruder.user_id)
    assert without_ids(mine.messages) == [HumanMessage("secret")]


def test_projector_dead_letters_a_foreign_event_that_bypassed_the_client(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """An event of another user published straight to the log never reaches the read model."""
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    mine = module_chatlog.history(session, alice)
    mine.add_messages([HumanMessage("one")])
    assert len(mine.messages) == 1
    forged = ChatEvent(session, to_event(HumanMessage("forged")), user_id=bob)
    forged_at = module_chatlog.producer.publish([forged])[0]
    mine.add_messages([HumanMessage("two")])
    assert without_ids(mine.messages) == [HumanMessage("one"), HumanMessage("two")]
    consumer = KafkaConsumer(
        **module_settings.kafka_client_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20_000,
    )
    consumer.subscribe([module_settings.dlq_topic])
    letter = next((r for r in consumer if r.key == session.encode()), None)
    consumer.close()
    assert letter is not None, "the foreign event never reached the dead-letter topic"
    headers = dict(letter.headers)
    assert int(headers["dlq-original-offset"]) == forged_at.offset
    assert b"ownership" in headers["dlq-reason"]
    assert module_chatlog.sessions(bob) == []


def test_sessions_lists_a_users_own_sessions_by_last_activity(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """ChatLog.sessions shows only the user's sessions, newest activity first, with counts."""
    alice, bob = unique("alice"), unique("bob")
    first, second, theirs = unique("a1"), unique("a2"), unique("b1")
    module_chatlog.history(first, alice).add_messages([HumanMessage("x"), AIMessage("y")])
    module_chatlog.history(second, alice).add_messages([HumanMessage("z")])
    module_chatlog.history(theirs, bob).add_messages([HumanMessage("w")])
    time.sleep(0.01)  # a later event time for the next append
    module_chatlog.history(first, alice).add_messages([HumanMessage("again")])
    eventually(lambda: [s.message_count for s in module_chatlog.sessions(alice)] == [3, 1])
    listed = module_chatlog.sessions(alice)
    assert [s.session_id for s in listed] == [first, second]
    assert all(s.user_id == alice and s.expires_at is None for s in listed)
    assert listed[0].created_at is not None and listed[0].updated_at is not None
    assert listed[0].created_at < listed[0].updated_at
    eventually(lambda: [s.session_id for s in module_chatlog.sessions(bob)] == [theirs])
    with pytest.raises(InvalidUserIdError):
        module_chatlog.sessions(None)  # type: ignore[arg-type]


def test_last_and_max_messages_read_only_the_newest(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """history.last(n) and max_messages return the newest n messages in log order."""
    user, session = unique("u"), unique("s")
    messages: list[BaseMessage] = [HumanMessage(str(i)) for i in range(50)]
    module_chatlog.history(session, user).add_messages(messages)
    history = module_chatlog.history(session, user, max_messages=3)
    assert history.messages == messages[-3:]
    assert history.last(5) == messages[-5:]
    assert history.last(0) == []
    assert history.last(500) == messages


def test_delete_session_removes_it_and_a_new_write_starts_afresh(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """A deleted session is gone from reads and listings; writing again starts a new one."""
    alice, session = unique("alice"), unique("s")
    history = module_chatlog.history(session, alice)
    history.add_messages([HumanMessage("old")])
    module_chatlog.delete_session(session, alice)
    assert history.messages == []
    assert module_chatlog.sessions(alice) == []
    history.add_messages([HumanMessage("new")])
    assert without_ids(history.messages) == [HumanMessage("new")]
    assert [s.message_count for s in module_chatlog.sessions(alice)] == [1]


def test_delete_user_removes_all_their_sessions_and_spares_others(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """delete_user deletes every session of the user, live and in a rebuild from the log."""
    alice, bob = unique("alice"), unique("bob")
    hers = [unique("a") for _ in range(3)]
    his = unique("b")
    for session in hers:
        module_chatlog.history(session, alice).add_messages([HumanMessage(session)])
    module_chatlog.history(his, bob).add_messages([HumanMessage("bob's")])
    eventually(lambda: len(module_chatlog.sessions(alice)) == 3)
    dead_before = module_projector.stats.dead_lettered
    assert sorted(module_chatlog.delete_user(alice)) == sorted(hers)
    keys = module_chatlog.reader.keys
    eventually(lambda: not redis_client.exists(keys.user_sessions(alice)))
    for session in hers:
        assert module_chatlog.history(session, alice).messages == []
        assert not redis_client.exists(keys.messages(session))
    assert without_ids(module_chatlog.history(his, bob).messages) == [HumanMessage("bob's")]
    assert module_projector.stats.dead_lettered == dead_before

    rebuilt = module_settings.namespace + "-rebuilt"
    Replayer(module_settings).rebuild(rebuilt)
    for session in hers:
        assert not redis_client.exists(f"{rebuilt}:s:{{{session}}}:msgs")
    assert not redis_client.exists(f"{rebuilt}:u:{{{alice}}}:sessions")
    assert redis_client.lrange(f"{rebuilt}:s:{{{his}}}:msgs", 0, -1) != []


def test_session_ttl_override_expires_the_session_in_redis(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """A 2 s per-session TTL removes every key of the idle session; readers then see nothing."""
    user, session = unique("u"), unique("s")
    history = module_chatlog.history(session, user)
    history.set_ttl(2)
    history.add_messages([HumanMessage("short-lived")])
    keys = module_chatlog.reader.keys
    eventually(lambda: redis_client.pttl(keys.messages(session)) > 0)
    assert 0 < redis_client.pttl(keys.meta(session)) <= 2000
    eventually(lambda: not redis_client.exists(keys.messages(session), keys.meta(session)))
    with ChatLog(module_settings) as other_process:
        assert other_process.history(session, user).messages == []
        assert other_process.sessions(user) == []


def test_reads_refresh_the_ttl_when_configured(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """With session_ttl_refresh_on_read, a read pushes the expiry of every key to now + TTL."""
    user, session = unique("u"), unique("s")
    history = module_chatlog.history(session, user)
    history.set_ttl(3600)
    history.add_messages([HumanMessage("kept alive")])
    keys = module_chatlog.reader.keys
    assert without_ids(history.messages) == [HumanMessage("kept alive")]
    before = redis_client.pexpiretime(keys.meta(session))
    time.sleep(0.01)
    refreshing = module_settings.with_(session_ttl_s=60.0, session_ttl_refresh_on_read=True)
    with ChatLog(refreshing) as reader:
        assert without_ids(reader.history(session, user).messages) == [HumanMessage("kept alive")]
    after = redis_client.pexpiretime(keys.meta(session))
    assert after > before
    assert redis_client.pexpiretime(keys.messages(session)) == after
