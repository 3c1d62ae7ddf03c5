"""The Lua apply step and verify's independent fold agree on random change sequences.

Hypothesis draws a log (appends with repeated message ids, conditional
appends at right and wrong versions, clears, session deletions, TTL changes
short and long, user deletions, shredded events of erased subjects, writers
that change, several sessions on two partitions),
delivers it to the real script on a real Redis in random batches with
earlier offsets redelivered, and folds it once with
:class:`~chatlog.projector.verify.ExpectedState`. Messages, meta (owner,
count, offset, partition), the applied positions and every user's session
index must come out the same: the fold pins every rule of the script.
"""

from __future__ import annotations

import time
import uuid
from itertools import pairwise
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlog.keys import (
    META_COUNT,
    META_EXPIRED,
    META_OFFSET,
    META_OWNER,
    META_PARTITION,
    ReadModelKeys,
)
from chatlog.projector.changes import Change
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.protocol import (
    OP_APPEND,
    OP_APPEND_IF,
    OP_CLEAR,
    OP_DELETE_SESSION,
    OP_DELETE_USER,
    OP_SET_TTL,
    OP_SHREDDED,
    pack_fields,
)
from chatlog.projector.redis_projection import RedisProjection
from chatlog.projector.verify import ExpectedState
from tests.helpers import delete_namespace

SESSIONS = ["s0", "s1", "s2", "s3"]
USERS = ["", "u1", "u2"]
#: Idle TTLs: none (0), one that runs out between events (the log is hours old,
#: so a session idle that long is expired by the wall clock at the end of a
#: batch too, yet a later record inside its window continues it, as the fold
#: says), and one of months.
TTLS_MS = [0, 1000, 10**10]
DEFAULT_TTLS_S = [None, 1.0, 10.0**7]
#: Message ids, few so that appends repeat them.
MESSAGE_IDS = ["", "m1", "m2", "m3"]

step = st.tuples(
    st.sampled_from(
        [OP_APPEND] * 4
        + [OP_APPEND_IF] * 2
        + [OP_CLEAR, OP_DELETE_SESSION, OP_SET_TTL, OP_DELETE_USER, OP_SHREDDED]
    ),
    st.sampled_from(SESSIONS),
    st.sampled_from(USERS),
    st.integers(1, 90_000),  # ms since the previous event
    st.sampled_from([None, *TTLS_MS]),
    st.sampled_from(MESSAGE_IDS),
    st.integers(0, 3),  # a conditional append's expected version
)

Step = tuple[str, str, str, int, int | None, str, int]


def build_log(steps: list[Step]) -> list[Change]:
    """The log: per-partition offsets, event times strictly increasing, hours in the past."""
    at = int(time.time() * 1000) - 3 * 3600 * 1000
    next_offset = {0: 0, 1: 0}
    log = []
    for number, (op, session, user, gap, ttl, key, version) in enumerate(steps):
        at += gap
        partition = 0 if op == OP_DELETE_USER else SESSIONS.index(session) % 2
        offset = next_offset[partition]
        next_offset[partition] += 1
        arg = b""
        if op == OP_APPEND:
            arg = f'{{"n":{number}}}'.encode()
        elif op == OP_APPEND_IF:
            # Two messages: the drawn id (maybe held already) and a fresh one.
            pairs = [key.encode(), f'{{"n":{number}}}'.encode(), f"c{number}".encode(), b"{}"]
            arg = pack_fields([str(version).encode(), *pairs])
        elif op == OP_SET_TTL and ttl is not None:
            arg = str(ttl).encode()
        elif op == OP_SHREDDED and version % 2:
            arg = OP_APPEND_IF.encode()  # a shredded conditional append (a verdict too)
        if op == OP_DELETE_USER:
            session, user = "", user or "u1"
        log.append(
            Change(partition, offset, session, user, at, op, arg, key if op == OP_APPEND else "")
        )
    return log


def deliveries(log: list[Change], cuts: list[int], replays: list[int]) -> list[list[Change]]:
    """The log in batches cut at ``cuts``; after batch k, ``replays[k]`` records again."""
    bounds = sorted({0, len(log), *(c % (len(log) + 1) for c in cuts)})
    batches = []
    for k, (start, stop) in enumerate(pairwise(bounds)):
        batches.append(log[start:stop])
        back = replays[k % len(replays)] if replays else 0
        if back:
            # A consumer restarted from an earlier committed offset: the same records again.
            batches.append(log[max(stop - back, 0) : stop])
    return batches


def stored(client: redis.Redis, keys: ReadModelKeys, session: str) -> dict[str, Any]:
    meta = client.hgetall(keys.meta(session))
    messages = [m.decode() for m in client.lrange(keys.messages(session), 0, -1)]
    if META_EXPIRED.encode() in meta:
        messages = []  # idle-expired: what is left is hidden from readers
    return {
        "messages": messages,
        "owner": meta.get(META_OWNER.encode(), b"").decode(),
        "count": int(meta.get(META_COUNT.encode(), b"0")),
        "offset": int(meta[META_OFFSET.encode()]) if meta else None,
        "partition": int(meta[META_PARTITION.encode()]) if meta else None,
    }


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(step, min_size=1, max_size=30),
    cuts=st.lists(st.integers(0, 30), max_size=6),
    replays=st.lists(st.integers(0, 6), max_size=4),
    default_ttl_s=st.sampled_from(DEFAULT_TTLS_S),
    detect_loss=st.booleans(),
)
def test_script_and_fold_agree_on_random_change_sequences(
    redis_client: redis.Redis,
    steps: list[Step],
    cuts: list[int],
    replays: list[int],
    default_ttl_s: float | None,
    detect_loss: bool,
) -> None:
    """Every session, meta hash, position and user index equals the fold's.

    With the live projector's loss detection on, its checks (generation key,
    meta ``count`` = list length) never fire on state the script wrote itself.
    """
    namespace = f"test:diff:{uuid.uuid4().hex[:10]}"
    keys = ReadModelKeys(namespace)
    log = build_log(steps)
    projection = RedisProjection(
        redis_client, namespace, session_ttl_s=default_ttl_s, detect_loss=detect_loss
    )
    if detect_loss:
        redis_client.set(keys.generation(), "differential")
    expected = ExpectedState(session_ttl_s=default_ttl_s)
    for change in log:
        expected.add(change)
    decided: set[tuple[int, int]] = set()
    try:
        for batch in deliveries(log, cuts, replays):
            advance: dict[int, int] = {}
            for change in batch:
                advance[change.partition] = change.offset + 1
            result = projection.apply(batch, advance=advance)
            assert not result.namespace_lost and not result.holes
            assert not [f for f in result.failed if f[1].reason.value != "ownership"]
            for change in batch:
                if change not in result.applied_records:
                    decided.add((change.partition, change.offset))
        now_ms = int(time.time() * 1000)
        for session in SESSIONS:
            actual = stored(redis_client, keys, session)
            want = expected.sessions.get(session)
            messages = expected.messages(session, now_ms=now_ms)
            assert actual["messages"] == messages, session
            if want is None:
                assert actual["offset"] is None, session
                continue
            if want.expired(expected.default_ttl_ms, now_ms):
                # Expired: the meta keeps the position, so redelivery cannot revive it.
                assert actual["offset"] in (want.offset, None), session
                continue
            held = {m.decode() for m in redis_client.smembers(keys.message_ids(session))}
            assert held == want.ids, session
            assert actual["owner"] == want.owner, session
            assert actual["offset"] == want.offset, session
            assert actual["partition"] == want.partition, session
            assert actual["count"] == len(messages), session
        for user in USERS[1:]:
            listed = redis_client.zrange(keys.user_sessions(user), 0, -1, withscores=True)
            actual_index = {s.decode(): int(score) for s, score in listed}
            assert actual_index == expected.user_sessions(user, now_ms=now_ms), user
        ends: dict[int, int] = {}
        for change in log:
            ends[change.partition] = change.offset + 1
        assert AppliedPositions(redis_client, namespace).read() == ends
    finally:
        delete_namespace(redis_client, namespace)


def test_redelivered_record_does_not_revive_an_expired_session(redis_client: redis.Redis) -> None:
    """Seven appends, a 1 s TTL, an append 1 ms later, the last record again: gone, as folded."""
    namespace = f"test:diff:{uuid.uuid4().hex[:10]}"
    keys = ReadModelKeys(namespace)
    steps: list[Step] = [(OP_APPEND, "s0", "u1", 1, None, "", 0)] * 7
    steps += [(OP_SET_TTL, "s0", "u1", 1, 1000, "", 0), (OP_APPEND, "s0", "u1", 1, None, "", 0)]
    log = build_log(steps)
    projection = RedisProjection(redis_client, namespace)
    expected = ExpectedState()
    for change in log:
        expected.add(change)
    try:
        for batch in (log, log[-1:], log):
            projection.apply(batch)
        assert expected.messages("s0") == []
        actual = stored(redis_client, keys, "s0")
        assert (actual["messages"], actual["offset"]) == ([], log[-1].offset)
        assert not redis_client.zrange(keys.user_sessions("u1"), 0, -1)
    finally:
        delete_namespace(redis_client, namespace)
