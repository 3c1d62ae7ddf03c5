"""Verify's log fold and difference classification, and replay's argument parsing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from chatlog.cli.timestamps import parse_timestamp
from chatlog.errors import ReplayError
from chatlog.projector.redis_projection import LogRecord
from chatlog.projector.verify import ExpectedState, compare
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
)
from chatlog.schemas.stored import stored_message

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(offset: int, payload: object, *, user: str | None = "u", at_s: float = 0) -> LogRecord:
    moment = T0 + timedelta(seconds=at_s)
    event = ChatEvent("s", payload, user_id=user, occurred_at=moment)  # type: ignore[arg-type]
    return LogRecord(0, offset, event)


def text(content: str) -> str:
    return stored_message(MessageAppended("human", content))


def test_identical_lists_are_no_difference() -> None:
    """Equal lists compare as ``None``."""
    assert compare("s", ["a", "b"], ["a", "b"]) is None


@pytest.mark.parametrize(
    ("actual", "kinds"),
    [
        (["a", "c"], ["missing"]),
        (["a", "b", "c", "a"], ["extra"]),
        (["a", "c", "b"], ["reordered"]),
        (["a", "X", "c"], ["altered"]),
        (["c", "X"], ["missing", "altered"]),
        (["b", "a"], ["missing", "reordered"]),
    ],
)
def test_differences_are_classified(actual: list[str], kinds: list[str]) -> None:
    """Deleted, added, reordered and altered messages are told apart."""
    difference = compare("s", ["a", "b", "c"], actual)
    assert difference is not None
    assert difference.kinds == kinds


def test_fold_honours_clear_and_delete() -> None:
    """A clear empties the session; after a delete a new write starts afresh."""
    state = ExpectedState()
    state.add(record(0, MessageAppended("human", "one")))
    state.add(record(1, SessionCleared()))
    state.add(record(2, MessageAppended("human", "two")))
    assert state.messages("s") == [text("two")]
    state.add(record(3, SessionDeleted()))
    assert state.messages("s") == []
    state.add(record(4, MessageAppended("human", "three"), user="v"))
    assert state.messages("s") == [text("three")]


def test_fold_rejects_writers_other_than_the_owner() -> None:
    """Events from another user (or none) on an owned session change nothing."""
    state = ExpectedState()
    state.add(record(0, MessageAppended("human", "mine")))
    state.add(record(1, MessageAppended("human", "theirs"), user="intruder"))
    state.add(record(2, SessionCleared(), user=None))
    assert state.messages("s") == [text("mine")]


def test_fold_expires_idle_sessions_by_event_time() -> None:
    """A session idle past its TTL is gone, and a later write starts it afresh."""
    state = ExpectedState(session_ttl_s=10)
    state.add(record(0, MessageAppended("human", "old")))
    state.add(record(1, MessageAppended("human", "new"), at_s=60))
    now_ms = int((T0 + timedelta(seconds=61)).timestamp() * 1000)
    assert state.messages("s", now_ms=now_ms) == [text("new")]
    assert state.messages("s", now_ms=now_ms + 20_000) == []
    state.add(record(2, SessionTtlSet(ttl_ms=0), at_s=62))
    assert state.messages("s", now_ms=now_ms + 10**9) == [text("new")]


def test_as_of_accepts_iso_and_epoch_milliseconds() -> None:
    """``--as-of`` takes ISO 8601 (UTC by default) or epoch milliseconds."""
    expected = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)
    assert parse_timestamp("2026-01-31T12:00:00Z") == expected
    assert parse_timestamp("2026-01-31T12:00:00") == expected
    assert parse_timestamp(str(int(expected.timestamp() * 1000))) == expected
    with pytest.raises(ReplayError):
        parse_timestamp("yesterday")

