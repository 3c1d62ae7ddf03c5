"""One behaviour suite for every read-model target: Redis, SQLite, PostgreSQL, DynamoDB.

Each test runs once per store (the ``target_kind`` fixture), the way
eventsourcing runs one recorder test case per backend. The stores are real:
a Redis server, SQLite files, the machine's PostgreSQL and moto's
DynamoDB-compatible server process. The rules each target must follow are
verify's fold (:class:`~chatlog.projector.verify.ExpectedState`), checked by
a random differential test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlog import Settings
from chatlog.errors import TargetError
from chatlog.histories.read_model import ReadModelReader, SessionSnapshot, SessionVersion
from chatlog.histories.session_pages import SessionPage, sessions_page
from chatlog.histories.target_reader import TargetSessionReader
from chatlog.keys import VERDICT_APPLIED, VERDICT_CONFLICT, VERDICT_DUPLICATE
from chatlog.projector.changes import Change, RefusalReason
from chatlog.projector.protocol import (
    OP_APPEND,
    OP_APPEND_IF,
    OP_CLEAR,
    OP_DELETE_SESSION,
    OP_DELETE_USER,
    OP_SET_TTL,
    pack_fields,
)
from chatlog.projector.targets import ReadModelTarget, open_target
from chatlog.projector.verify import ExpectedState

HOUR_MS = 3600 * 1000


def message(text: str) -> bytes:
    """A stored message (message_to_dict JSON) that every target can hold."""
    return (
        '{"type":"human","data":{"content":"' + text + '","additional_kwargs":{},'
        '"response_metadata":{},"type":"human","name":null,"id":null}}'
    ).encode()


class Log:
    """Builds changes with per-partition offsets and event times an hour in the past."""

    def __init__(self) -> None:
        self.at = int(time.time() * 1000) - HOUR_MS
        self.offsets = {0: 0, 1: 0}

    def change(
        self, op: str, session: str = "s1", user: str = "u1", arg: bytes = b"", *,
        partition: int = 0, gap_ms: int = 1000,
    ) -> Change:
        self.at += gap_ms
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        return Change(partition, offset, session, user, self.at, op, arg)


def stored_texts(target: ReadModelTarget, *texts: str) -> list[str]:
    return [target.stored_form(message(t).decode()) for t in texts]


def conditional(expected: int, *ids: str) -> bytes:
    """A conditional append's argument: at ``expected`` messages, one message per id."""
    fields = [str(expected).encode()]
    for key in ids:
        fields += [key.encode(), message(key)]
    return pack_fields(fields)


def contents(messages: list[bytes]) -> list[str]:
    """The contents of read messages (every store's JSON form)."""
    return [json.loads(m)["data"]["content"] for m in messages]


Reader = ReadModelReader | TargetSessionReader


def page_of(reader: Reader, user_id: str, *, limit: int, cursor: str | None = None
            ) -> SessionPage:
    """A page of the user's sessions, as ``ChatLog.sessions`` reads it from each store."""
    if isinstance(reader, ReadModelReader):
        return sessions_page(reader, user_id, limit=limit, cursor=cursor)
    return reader.sessions_page(user_id, limit=limit, cursor=cursor)


def test_appends_are_read_back_in_log_order(read_model_target: ReadModelTarget) -> None:
    log = Log()
    batch = [log.change(OP_APPEND, arg=message(f"m{i}")) for i in range(3)]
    result = read_model_target.apply(batch, advance={0: 3})
    assert result.applied == 3
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "m0", "m1", "m2")
    assert read_model_target.positions() == {0: 3}


def test_redelivered_batch_is_applied_once(read_model_target: ReadModelTarget) -> None:
    log = Log()
    batch = [log.change(OP_APPEND, arg=message(f"m{i}")) for i in range(3)]
    read_model_target.apply(batch[:2], advance={0: 2})
    again = read_model_target.apply(batch, advance={0: 3})
    assert (again.applied, again.skipped) == (1, 2)
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "m0", "m1", "m2")


def test_another_users_append_is_refused_by_ownership(read_model_target: ReadModelTarget) -> None:
    log = Log()
    mine = log.change(OP_APPEND, user="u1", arg=message("mine"))
    theirs = log.change(OP_APPEND, user="u2", arg=message("theirs"))
    result = read_model_target.apply([mine, theirs], advance={0: 2})
    assert result.applied == 1
    assert [(c.offset, r.reason) for c, r in result.failed] == [(1, RefusalReason.OWNERSHIP)]
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "mine")


def test_clear_empties_and_later_appends_follow(read_model_target: ReadModelTarget) -> None:
    log = Log()
    read_model_target.apply(
        [log.change(OP_APPEND, arg=message("old")), log.change(OP_CLEAR)], advance={0: 2}
    )
    read_model_target.apply([log.change(OP_APPEND, arg=message("new"))], advance={0: 3})
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "new")


def test_deleted_session_is_not_resurrected_by_redelivery(
    read_model_target: ReadModelTarget,
) -> None:
    log = Log()
    first = log.change(OP_APPEND, arg=message("a"))
    delete = log.change(OP_DELETE_SESSION)
    read_model_target.apply([first, delete], advance={0: 2})
    again = read_model_target.apply([first], advance={0: 1})
    assert again.skipped == 1
    assert read_model_target.read_session("s1") == []
    assert read_model_target.user_sessions("u1") == {}
    assert read_model_target.positions() == {0: 2}  # positions only move forward
    # A later write starts the session afresh, with its writer as the new owner.
    read_model_target.apply([log.change(OP_APPEND, user="u2", arg=message("b"))], advance={0: 3})
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "b")
    assert list(read_model_target.user_sessions("u2")) == ["s1"]


def test_user_deletion_unlists_the_users_sessions(read_model_target: ReadModelTarget) -> None:
    log = Log()
    a = log.change(OP_APPEND, session="a", arg=message("x"))
    b = log.change(OP_APPEND, session="b", arg=message("y"))
    read_model_target.apply([a, b], advance={0: 2})
    assert read_model_target.user_sessions("u1") == {"a": a.event_ms, "b": b.event_ms}
    gone = log.change(OP_DELETE_USER, session="", user="u1")
    result = read_model_target.apply([gone], advance={0: 3})
    assert result.applied == 1
    assert read_model_target.user_sessions("u1") == {}


def test_session_on_another_partition_is_refused(read_model_target: ReadModelTarget) -> None:
    log = Log()
    read_model_target.apply([log.change(OP_APPEND, arg=message("a"))], advance={0: 1})
    moved = log.change(OP_APPEND, arg=message("b"), partition=1)
    result = read_model_target.apply([moved], advance={1: 1})
    assert [r.reason for _, r in result.failed] == [RefusalReason.PARTITION]
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "a")


def test_session_idle_past_its_ttl_by_event_time_reads_empty(
    target_kind: str, read_model_target: ReadModelTarget, read_model_reader: Reader
) -> None:
    """A TTL that ran out by event time (a replay of old events) never revives the session."""
    log = Log()
    ttl = log.change(OP_SET_TTL, arg=b"60000")
    read_model_target.apply([ttl, log.change(OP_APPEND, arg=message("a"))], advance={0: 2})
    assert read_model_target.read_session("s1") == []
    assert read_model_target.user_sessions("u1") == {}
    found = read_model_reader.version("s1")  # what history.version reads
    assert (found.owner, found.version, found.offset) == (None, 0, 1)
    # Redis dropped the keys itself; SQL and DynamoDB keep rows until swept.
    assert read_model_target.sweep() == (0 if target_kind == "redis" else 1)
    assert read_model_target.sweep() == 0


def test_drop_removes_the_read_model(
    target_kind: str, target_url_factory: Callable[[str], str]
) -> None:
    url = target_url_factory(target_kind)
    target = open_target(url, Settings())
    target.apply([Log().change(OP_APPEND, arg=message("a"))], advance={0: 1})
    target.drop()
    target.close()
    reopened = open_target(url, Settings())
    try:
        assert reopened.read_session("s1") == []
        assert reopened.positions() == {}
    finally:
        reopened.drop()
        reopened.close()


def test_replace_session_rebuilds_one_session_unless_the_store_is_newer(
    target_kind: str, read_model_target: ReadModelTarget
) -> None:
    """The single-session rebuild (``replay session --target``) of the SQL and DynamoDB stores."""
    log = Log()
    a, b, c = (log.change(OP_APPEND, arg=message(t)) for t in "abc")
    other = log.change(OP_APPEND, session="s2", arg=message("o"))
    read_model_target.apply([a, b, other], advance={0: 4})
    if target_kind == "redis":
        with pytest.raises(TargetError, match="--namespace"):
            read_model_target.replace_session("s1", [a], through=0)
        return
    assert not read_model_target.replace_session("s1", [a], through=a.offset)  # store is newer
    assert read_model_target.replace_session("s1", [a, b, c], through=c.offset)
    assert read_model_target.read_session("s1") == stored_texts(read_model_target, "a", "b", "c")
    assert read_model_target.user_sessions("u1") == {"s1": c.event_ms, "s2": other.event_ms}
    # A session the log does not hold goes; positions and other sessions stay.
    assert read_model_target.replace_session("s1", [], through=c.offset + 1)
    assert read_model_target.read_session("s1") == []
    assert list(read_model_target.user_sessions("u1")) == ["s2"]
    assert read_model_target.positions() == {0: 4}


# -- what ChatLog reads: versions, verdicts, windows, session pages (sync and async) --------


def applied_with_verdicts(target: ReadModelTarget) -> tuple[Change, Change, Change]:
    """Two appends, then conditional appends: applied, refused (stale version), duplicate."""
    log = Log()
    plain = [log.change(OP_APPEND, arg=message(f"m{i}")) for i in range(2)]
    applied = log.change(OP_APPEND_IF, arg=conditional(2, "c1", "c2"))
    stale = log.change(OP_APPEND_IF, arg=conditional(2, "c3"))
    result = target.apply([*plain, applied, stale], advance={0: 4})
    assert (result.applied, result.conflicts, result.failed) == (3, 1, [])
    again = log.change(OP_APPEND_IF, arg=conditional(2, "c1", "c2"))
    result = target.apply([again], advance={0: 5})
    assert (result.applied, result.deduplicated) == (0, 1)
    return applied, stale, again


def test_version_is_the_message_count_and_verdicts_answer_conditional_appends(
    read_model_target: ReadModelTarget, read_model_reader: Reader
) -> None:
    """Each conditional append's verdict is stored with the session, as Redis's hash holds it."""
    applied, stale, again = applied_with_verdicts(read_model_target)
    verdicts = [
        read_model_reader.version("s1", verdict_of=c.offset).verdict
        for c in (applied, stale, again)
    ]
    assert verdicts == [VERDICT_APPLIED, VERDICT_CONFLICT + "4", VERDICT_DUPLICATE]
    assert read_model_reader.version("s1") == SessionVersion(4, 0, "u1", 4, None)
    assert read_model_reader.version("nobody") == SessionVersion(-1, None, None, 0, None)
    assert contents(read_model_reader.read("s1").messages) == ["m0", "m1", "c1", "c2"]


Window = Callable[[int | None, int | None], SessionSnapshot]


def windows(read: Window) -> list[tuple[int, list[str]]]:
    """The window reads every store must answer alike: (start, contents) each."""
    asked = [(2, None), (2, 3), (2, 1), (None, None), (None, 2), (2, 0), (10, None), (2, 9)]
    found = []
    for limit, before in asked:
        snapshot = read(limit, before)
        found.append((snapshot.start, contents(snapshot.messages)))
    return found


EXPECTED_WINDOWS = [
    (3, ["m3", "m4"]),
    (1, ["m1", "m2"]),
    (0, ["m0"]),
    (0, ["m0", "m1", "m2", "m3", "m4"]),
    (0, ["m0", "m1"]),
    (0, []),
    (0, ["m0", "m1", "m2", "m3", "m4"]),
    (7, []),
]


def five_messages(target: ReadModelTarget) -> None:
    log = Log()
    target.apply([log.change(OP_APPEND, arg=message(f"m{i}")) for i in range(5)], advance={0: 5})


def test_window_reads_page_back_from_the_newest_message(
    read_model_target: ReadModelTarget, read_model_reader: Reader
) -> None:
    """``history.read(limit=, before=)`` pages: the same windows and starts on every store."""
    five_messages(read_model_target)

    def read(limit: int | None, before: int | None) -> SessionSnapshot:
        return read_model_reader.read_window("s1", limit=limit, before=before)

    assert windows(read) == EXPECTED_WINDOWS


def test_async_reads_answer_like_the_sync_ones(
    read_model_target: ReadModelTarget, read_model_reader: Reader
) -> None:
    """Async version and window reads (ChatLog's a* methods) answer alike on every store."""
    applied, stale, _again = applied_with_verdicts(read_model_target)

    async def read() -> tuple[list[str | None], SessionVersion, SessionSnapshot]:
        try:
            verdicts = [
                (await read_model_reader.aversion("s1", verdict_of=c.offset)).verdict
                for c in (applied, stale)
            ]
            current = await read_model_reader.aversion("s1")
            window = await read_model_reader.aread_window("s1", limit=3, before=None)
            return verdicts, current, window
        finally:
            await read_model_reader.aclose()

    verdicts, current, window = asyncio.run(read())
    assert verdicts == [VERDICT_APPLIED, VERDICT_CONFLICT + "4"]
    assert (current.version, current.owner) == (4, "u1")
    assert (window.start, contents(window.messages)) == (1, ["m1", "c1", "c2"])


def test_sessions_page_newest_first_with_a_cursor(
    read_model_target: ReadModelTarget, read_model_reader: Reader
) -> None:
    """``ChatLog.sessions(user, limit=, cursor=)`` pages alike on every store."""
    log = Log()
    batch = [log.change(OP_APPEND, session=s, arg=message(s)) for s in ("a", "b", "c", "d")]
    batch.append(log.change(OP_APPEND, session="mallory", user="u2", arg=message("x")))
    read_model_target.apply(batch, advance={0: 5})
    first = page_of(read_model_reader, "u1", limit=3)
    assert [s.session_id for s in first] == ["d", "c", "b"]
    assert first.next_cursor is not None
    rest = page_of(read_model_reader, "u1", limit=3, cursor=first.next_cursor)
    assert ([s.session_id for s in rest], rest.next_cursor) == (["a"], None)
    assert [s.message_count for s in first] == [1, 1, 1]
    exact = page_of(read_model_reader, "u1", limit=4)
    assert (len(exact), exact.next_cursor) == (4, None)


# -- the fold is the reference: random logs, random batches, redelivery ------------------

SESSIONS = ["s0", "s1", "s2"]
USERS = ["", "u1", "u2"]

step = st.tuples(
    st.sampled_from([OP_APPEND] * 4 + [OP_CLEAR, OP_DELETE_SESSION, OP_SET_TTL, OP_DELETE_USER]),
    st.sampled_from(SESSIONS),
    st.sampled_from(USERS),
    st.integers(1, 90_000),
    # Short TTLs too: the targets fold with verify's rules, expiry between events included.
    st.sampled_from([None, 0, 120_000, 10**10]),
)


def random_log(steps: list[tuple[str, str, str, int, int | None]]) -> list[Change]:
    log = Log()
    changes = []
    for number, (op, session, user, gap, ttl) in enumerate(steps):
        arg = b""
        if op == OP_APPEND:
            arg = message(f"n{number}")
        elif op == OP_SET_TTL and ttl is not None:
            arg = str(ttl).encode()
        if op == OP_DELETE_USER:
            session, user = "", user or "u1"
        partition = 0 if op == OP_DELETE_USER else SESSIONS.index(session) % 2
        changes.append(log.change(op, session, user, arg, partition=partition, gap_ms=gap))
    return changes


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(step, min_size=1, max_size=20),
    cuts=st.lists(st.integers(0, 20), max_size=4),
    back=st.integers(0, 5),
)
def test_target_and_fold_agree_on_random_change_sequences(
    target_kind: str,
    target_url_factory: Callable[[str], str],
    steps: list[tuple[str, str, str, int, int | None]],
    cuts: list[int],
    back: int,
) -> None:
    """Messages, user indexes and positions equal the fold's after redelivered batches."""
    if target_kind == "redis":
        # The Lua script against the fold is test_projection_differential's (long TTLs only).
        steps = [(op, s, u, gap, None if ttl == 120_000 else ttl) for op, s, u, gap, ttl in steps]
    log = random_log(steps)
    expected = ExpectedState()
    for change in log:
        expected.add(change)
    target = open_target(target_url_factory(target_kind), Settings())
    try:
        bounds = sorted({0, len(log), *(c % (len(log) + 1) for c in cuts)})
        for start, stop in pairwise(bounds):
            for batch in (log[start:stop], log[max(stop - back, 0) : stop]):
                advance = {c.partition: c.offset + 1 for c in batch}
                target.apply(batch, advance=advance)
        now = int(time.time() * 1000)
        for session in SESSIONS:
            want = [target.stored_form(m) for m in expected.messages(session, now_ms=now)]
            assert target.read_session(session, now_ms=now) == want, session
        for user in USERS[1:]:
            assert target.user_sessions(user, now_ms=now) == expected.user_sessions(
                user, now_ms=now
            ), user
        ends: dict[int, int] = {}
        for change in log:
            ends[change.partition] = change.offset + 1
        assert target.positions() == ends
    finally:
        target.close()


@pytest.mark.parametrize("target_kind", ["dynamodb"])
def test_dynamodb_session_past_the_item_limit_is_refused_not_failed(
    target_kind: str, read_model_target: ReadModelTarget
) -> None:
    """An append that would pass 400 KB is dead-lettered; the session keeps what it had."""
    big = "x" * 150_000
    log = Log()
    batch = [log.change(OP_APPEND, arg=message(f"{big}{i}")) for i in range(3)]
    result = read_model_target.apply(batch, advance={0: 3})
    assert result.applied == 2
    [(refused, refusal)] = result.failed
    assert refused.offset == 2
    assert refusal.reason is RefusalReason.SESSION_FAILED
    assert "ItemTooLargeError" in str(refusal) and "400 KB" in str(refusal)
    assert len(read_model_target.read_session("s1")) == 2
    assert read_model_target.positions() == {0: 3}
