"""The apply step as the projector drives it: many sessions per script call, sent ahead.

A batch goes to Redis as script calls of up to ``SESSIONS_PER_CALL``
sessions each; the projector writes one batch and reads the next from Kafka
before it reads the verdicts. These tests pin what that must not change:
verdicts land on the right session whatever call it is in, one broken
session does not take its call down, positions move in the same round trip,
a dropped connection between write and read loses and duplicates nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
import redis

from chatlog.keys import ReadModelKeys
from chatlog.projector.changes import Change, RefusalReason
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.redis_projection import SESSIONS_PER_CALL, RedisProjection
from chatlog.schemas.events import MessageAppended
from chatlog.schemas.stored import stored_message
from tests.helpers import delete_namespace

NOW_MS = int(datetime.now(timezone.utc).timestamp() * 1000)


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A namespace of this test alone, deleted afterwards."""
    name = f"test:batch:{uuid.uuid4().hex[:10]}"
    yield name
    delete_namespace(redis_client, name)


def append(offset: int, session: str, text: str, user: str = "alice", partition: int = 0) -> Change:
    stored = stored_message(MessageAppended("human", text)).encode()
    return Change(partition, offset, session, user, NOW_MS + offset, "A", stored)


def texts(client: redis.Redis, keys: ReadModelKeys, session: str) -> list[str]:
    return [json.loads(m)["data"]["content"] for m in client.lrange(keys.messages(session), 0, -1)]


def test_verdicts_reach_the_right_session_in_every_call_of_a_batch(
    redis_client: redis.Redis, namespace: str
) -> None:
    projection = RedisProjection(redis_client, namespace)
    keys = ReadModelKeys(namespace)
    sessions = [f"s{n:04d}" for n in range(SESSIONS_PER_CALL * 3 + 5)]
    # Every session owned by its own user first.
    projection.apply([append(n, sid, "first", user=f"u{n}") for n, sid in enumerate(sessions)])
    # Then one batch over all of them: a foreign writer in a session of each
    # call, and a redelivered (older) event in another.
    foreign = {sessions[3], sessions[SESSIONS_PER_CALL + 7], sessions[-1]}
    stale = {sessions[SESSIONS_PER_CALL * 2 + 1]}
    batch = []
    base = len(sessions)
    for n, sid in enumerate(sessions):
        if sid in stale:
            batch.append(append(n, sid, "first", user=f"u{n}"))  # already applied
        batch.append(append(base + n, sid, "second", user="mallory" if sid in foreign else f"u{n}"))
    result = projection.apply(batch)

    assert result.skipped == len(stale)
    assert result.skipped_by_type == {"MessageAppended": len(stale)}
    assert sorted(c.session_id for c, _ in result.failed) == sorted(foreign)
    assert all(why.reason is RefusalReason.OWNERSHIP for _, why in result.failed)
    assert all("mallory" in str(why) for _, why in result.failed)
    assert result.applied == len(sessions) - len(foreign)
    assert {c.session_id for c in result.applied_records} == set(sessions) - foreign
    for sid in sessions:
        expected = ["first"] if sid in foreign else ["first", "second"]
        assert texts(redis_client, keys, sid) == expected, sid
    # The index lists each session for its owner only.
    assert redis_client.zrange(keys.user_sessions("mallory"), 0, -1) == []
    assert redis_client.zrange(keys.user_sessions("u3"), 0, -1) == [sessions[3].encode()]


def test_a_broken_session_fails_alone(redis_client: redis.Redis, namespace: str) -> None:
    projection = RedisProjection(redis_client, namespace)
    keys = ReadModelKeys(namespace)
    # Someone put a string where the message list goes: RPUSH fails there.
    redis_client.set(keys.messages("broken"), "not a list")
    batch = [append(0, "before", "a"), append(1, "broken", "b"), append(2, "after", "c")]
    result = projection.apply(batch)

    assert [(c.session_id, why.reason) for c, why in result.failed] == [
        ("broken", RefusalReason.SESSION_FAILED)
    ]
    assert "WRONGTYPE" in str(result.failed[0][1])
    assert result.applied == 2
    assert texts(redis_client, keys, "before") == ["a"]
    assert texts(redis_client, keys, "after") == ["c"]
    assert redis_client.get(keys.messages("broken")) == b"not a list"


def test_a_session_tracked_on_another_partition_is_refused(
    redis_client: redis.Redis, namespace: str
) -> None:
    projection = RedisProjection(redis_client, namespace)
    projection.apply([append(0, "moved", "a", partition=1)])
    result = projection.apply([append(5, "moved", "b", partition=2), append(6, "other", "c")])

    assert len(result.failed) == 1
    change, why = result.failed[0]
    assert why.reason is RefusalReason.PARTITION
    assert change.offset == 5 and "partition 1" in str(why) and "partition 2" in str(why)
    assert texts(redis_client, ReadModelKeys(namespace), "moved") == ["a"]


def test_positions_advance_after_the_batch_in_the_same_round_trip(
    redis_client: redis.Redis, namespace: str
) -> None:
    projection = RedisProjection(redis_client, namespace)
    positions = AppliedPositions(redis_client, namespace)
    projection.apply([append(0, "s", "a"), append(1, "s", "b")], advance={0: 2, 3: 40})
    assert positions.read() == {0: 2, 3: 40}
    # Positions never go back, and a batch of only positions is sent too.
    projection.apply([], advance={0: 1, 3: 41})
    assert positions.read() == {0: 2, 3: 41}


def test_a_batch_sent_ahead_sees_the_one_before(redis_client: redis.Redis, namespace: str) -> None:
    projection = RedisProjection(redis_client, namespace)
    first = projection.send([append(n, "s", f"m{n}") for n in range(5)])
    # Sent before the first batch's verdicts are read, with one event the
    # first batch already applied: Redis runs them in order, so it is skipped.
    second = projection.send([append(n, "s", f"m{n}") for n in range(4, 8)])
    assert first.result().applied == 5
    later = second.result()
    assert (later.applied, later.skipped) == (3, 1)
    assert texts(redis_client, ReadModelKeys(namespace), "s") == [f"m{n}" for n in range(8)]


def test_a_connection_dropped_before_the_verdicts_are_read_loses_and_duplicates_nothing(
    redis_client: redis.Redis, redis_url: str, namespace: str
) -> None:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url, client_name=name)
    try:
        projection = RedisProjection(client, namespace)
        pending = projection.send([append(n, f"s{n % 7}", f"m{n}") for n in range(70)])
        killed = 0
        for entry in redis_client.client_list():
            if entry.get("name") == name:
                redis_client.execute_command("CLIENT", "KILL", "ID", entry["id"])
                killed += 1
        assert killed >= 1
        # Whether Redis ran the batch before the kill or not, reading the
        # verdicts resends it on a new connection; the apply is idempotent.
        result = pending.result()
        assert result.applied + result.skipped == 70
        keys = ReadModelKeys(namespace)
        for s in range(7):
            assert texts(redis_client, keys, f"s{s}") == [f"m{n}" for n in range(s, 70, 7)]
    finally:
        client.close()


def test_the_index_follows_an_ownership_change_within_one_batch(
    redis_client: redis.Redis, namespace: str
) -> None:
    projection = RedisProjection(redis_client, namespace)
    keys = ReadModelKeys(namespace)
    deleted = Change(0, 1, "s", "alice", NOW_MS + 1, "D", b"")
    result = projection.apply([append(0, "s", "a"), deleted, append(2, "s", "b", user="bob")])
    assert result.applied == 3
    assert redis_client.zrange(keys.user_sessions("alice"), 0, -1) == []
    assert redis_client.zrange(keys.user_sessions("bob"), 0, -1) == [b"s"]
    assert texts(redis_client, keys, "s") == ["b"]


def test_keys_stop_expiring_when_the_ttl_is_turned_off(
    redis_client: redis.Redis, namespace: str
) -> None:
    keys = ReadModelKeys(namespace)
    RedisProjection(redis_client, namespace, session_ttl_s=3600).apply([append(0, "s", "a")])
    assert redis_client.pttl(keys.messages("s")) > 0
    untimed = RedisProjection(redis_client, namespace)
    untimed.apply([append(1, "s", "b")])
    assert (redis_client.pttl(keys.messages("s")), redis_client.pttl(keys.meta("s"))) == (-1, -1)
    # A session written before the expiry field existed, its keys expiring.
    untimed.apply([append(0, "legacy", "a")])
    redis_client.hdel(keys.meta("legacy"), "expiry")
    for key in (keys.messages("legacy"), keys.meta("legacy")):
        redis_client.pexpire(key, 3_600_000)
    untimed.apply([append(1, "legacy", "b")])
    assert redis_client.pttl(keys.messages("legacy")) == -1
    assert redis_client.pttl(keys.meta("legacy")) == -1
    assert texts(redis_client, keys, "legacy") == ["a", "b"]
