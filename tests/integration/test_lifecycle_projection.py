"""The apply step's lifecycle rules on a real Redis: ownership, delete, TTL by event time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis
from langchain_core.messages import HumanMessage

from chatlog.histories.messages import to_event
from chatlog.histories.read_model import ReadModelReader
from chatlog.keys import META_DELETED, META_EXPIRED, META_OWNER, ReadModelKeys
from chatlog.projector.changes import RefusalReason
from chatlog.projector.redis_projection import LogRecord, RedisProjection
from chatlog.schemas.events import (
    USER_EVENT_SESSION_ID,
    ChatEvent,
    Payload,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    UserDeleted,
)
from tests.helpers import delete_namespace

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A namespace of this test alone, deleted afterwards."""
    name = f"test:lc:{uuid.uuid4().hex[:10]}"
    yield name
    delete_namespace(redis_client, name)


def msg(text: str) -> Payload:
    return to_event(HumanMessage(text))


def rec(
    offset: int,
    payload: Payload,
    user: str | None = "alice",
    *,
    session: str = "s1",
    at: datetime = NOW,
) -> LogRecord:
    return LogRecord(0, offset, ChatEvent(session, payload, user_id=user, occurred_at=at))


def texts(client: redis.Redis, keys: ReadModelKeys, session: str = "s1") -> list[str]:
    import json

    return [json.loads(m)["data"]["content"] for m in client.lrange(keys.messages(session), 0, -1)]


def test_foreign_events_are_rejected_without_touching_the_session(
    redis_client: redis.Redis, namespace: str
) -> None:
    """First writer owns; another user's or an anonymous event fails, the owner's still apply."""
    projection = RedisProjection(redis_client, namespace)
    keys = projection.keys
    result = projection.apply(
        [rec(0, msg("a")), rec(1, msg("evil"), "bob"), rec(2, msg("anon"), None), rec(3, msg("b"))]
    )
    assert result.applied == 2
    assert [(r.offset, why.reason) for r, why in result.failed] == [
        (1, RefusalReason.OWNERSHIP),
        (2, RefusalReason.OWNERSHIP),
    ]
    assert texts(redis_client, keys) == ["a", "b"]
    assert redis_client.hget(keys.meta("s1"), META_OWNER) == b"alice"
    assert redis_client.zrange(keys.user_sessions("bob"), 0, -1) == []
    assert redis_client.zrange(keys.user_sessions("alice"), 0, -1) == [b"s1"]
    # A rejected event does not advance the offset: redelivered, it is rejected again.
    late = projection.apply([rec(4, msg("late"), "bob")])
    again = projection.apply([rec(3, msg("b")), rec(4, msg("late"), "bob")])
    assert (late.applied, len(late.failed)) == (0, 1)
    assert (again.applied, again.skipped, len(again.failed)) == (0, 1, 1)
    assert texts(redis_client, keys) == ["a", "b"]


def test_delete_leaves_a_tombstone_that_redelivery_cannot_resurrect(
    redis_client: redis.Redis, namespace: str
) -> None:
    """After SessionDeleted, redelivered older events are skipped; a newer write starts afresh."""
    projection = RedisProjection(redis_client, namespace)
    keys = projection.keys
    projection.apply([rec(0, msg("a")), rec(1, msg("b")), rec(2, SessionDeleted())])
    assert not redis_client.exists(keys.messages("s1"))
    meta = redis_client.hgetall(keys.meta("s1"))
    assert set(meta) == {b"partition", b"offset", META_DELETED.encode()}
    assert redis_client.zrange(keys.user_sessions("alice"), 0, -1) == []
    redelivered = projection.apply([rec(0, msg("a")), rec(1, msg("b"))])
    assert redelivered.skipped == 2
    assert not redis_client.exists(keys.messages("s1"))
    assert redis_client.zrange(keys.user_sessions("alice"), 0, -1) == []
    # A new write after the deletion: a fresh session, claimed by its writer.
    projection.apply([rec(3, msg("new"), "bob")])
    assert texts(redis_client, keys) == ["new"]
    assert redis_client.hget(keys.meta("s1"), META_OWNER) == b"bob"
    assert not redis_client.hexists(keys.meta("s1"), META_DELETED)
    assert redis_client.hget(keys.meta("s1"), "count") == b"1"


def test_delete_by_another_user_is_rejected(redis_client: redis.Redis, namespace: str) -> None:
    """Only the owner can delete an owned session."""
    projection = RedisProjection(redis_client, namespace)
    result = projection.apply([rec(0, msg("a")), rec(1, SessionDeleted(), "bob")])
    assert len(result.failed) == 1
    assert texts(redis_client, projection.keys) == ["a"]


def test_ttl_sets_expiry_at_last_event_time_plus_ttl_on_every_key(
    redis_client: redis.Redis, namespace: str
) -> None:
    """Both keys of the session expire at (last event time + deployment TTL)."""
    projection = RedisProjection(redis_client, namespace, session_ttl_s=3600)
    keys = projection.keys
    projection.apply([rec(0, msg("a"), at=NOW - timedelta(minutes=10)), rec(1, msg("b"))])
    expected = int(NOW.timestamp() * 1000) + 3_600_000
    assert redis_client.pexpiretime(keys.messages("s1")) == expected
    assert redis_client.pexpiretime(keys.meta("s1")) == expected


def test_replayed_idle_expired_session_does_not_come_back(
    redis_client: redis.Redis, namespace: str
) -> None:
    """Events whose last time + TTL is past are expired at once, and redelivery is skipped."""
    projection = RedisProjection(redis_client, namespace, session_ttl_s=60)
    keys = projection.keys
    reader = ReadModelReader(redis_client, namespace)
    old = NOW - timedelta(hours=2)
    for attempt in range(2):
        result = projection.apply([rec(0, msg("a"), at=old), rec(1, msg("b"), at=old)])
        assert (result.applied, result.skipped) == ((2, 0) if attempt == 0 else (0, 2))
        # The meta keeps the position, marked expired; readers see no session.
        assert redis_client.hexists(keys.meta("s1"), META_EXPIRED)
        assert reader.read("s1")[:4] == (1, 0, None, [])
        assert redis_client.zrange(keys.user_sessions("alice"), 0, -1) == []


def test_per_session_ttl_override_wins_and_zero_never_expires(
    redis_client: redis.Redis, namespace: str
) -> None:
    """SessionTtlSet overrides the default: 0 persists, None goes back to the default."""
    projection = RedisProjection(redis_client, namespace, session_ttl_s=60)
    keys = projection.keys
    old = NOW - timedelta(hours=2)
    projection.apply([rec(0, SessionTtlSet(0), at=old), rec(1, msg("kept"), at=old)])
    assert texts(redis_client, keys) == ["kept"]
    assert redis_client.pttl(keys.messages("s1")) == -1
    projection.apply([rec(2, SessionTtlSet(10_800_000), at=old)])
    assert redis_client.pexpiretime(keys.meta("s1")) == int(old.timestamp() * 1000) + 10_800_000
    projection.apply([rec(3, SessionTtlSet(None), at=old)])
    assert redis_client.hexists(keys.meta("s1"), META_EXPIRED)
    assert ReadModelReader(redis_client, keys.namespace).read("s1").messages == []


def test_user_deleted_removes_only_index_entries_not_newer_than_it(
    redis_client: redis.Redis, namespace: str
) -> None:
    """A (redelivered) UserDeleted never hides sessions the user started after it."""
    projection = RedisProjection(redis_client, namespace)
    keys = projection.keys
    earlier = NOW - timedelta(minutes=5)
    projection.apply([rec(0, msg("a"), session="old", at=earlier)])
    projection.apply([rec(1, msg("b"), session="new", at=NOW)])
    deletion = LogRecord(
        3, 0, ChatEvent(USER_EVENT_SESSION_ID, UserDeleted(), user_id="alice", occurred_at=earlier)
    )
    assert projection.apply([deletion]).applied_by_type == {"UserDeleted": 1}
    assert redis_client.zrange(keys.user_sessions("alice"), 0, -1) == [b"new"]


def test_clear_keeps_owner_and_counts_restart(redis_client: redis.Redis, namespace: str) -> None:
    """SessionCleared empties the list but the session keeps its owner."""
    projection = RedisProjection(redis_client, namespace)
    keys = projection.keys
    projection.apply([rec(0, msg("a")), rec(1, SessionCleared()), rec(2, msg("b"))])
    assert texts(redis_client, keys) == ["b"]
    assert redis_client.hmget(keys.meta("s1"), ["owner", "count"]) == [b"alice", b"1"]
