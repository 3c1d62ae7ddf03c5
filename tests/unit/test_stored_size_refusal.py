"""The change reader refuses a record whose stored JSON would be over the size limit."""

from __future__ import annotations

from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal, RefusalReason
from chatlog.schemas.codec import EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended, ToolCall
from tests.fixtures.raw_record import RawRecord

LIMIT = 64 * 1024


def _record(payload: MessageAppended) -> RawRecord:
    value = EventCodec().encode(ChatEvent("s", payload))
    return RawRecord("t", 0, 7, b"s", value, [])


def test_many_tiny_tool_calls_are_refused_as_stored_over_size() -> None:
    """10k empty tool calls: 50 KB of Avro (under the limit), about 500 KB of stored JSON."""
    calls = (ToolCall(name="", args="{}", id=None),) * 10_000
    record = _record(MessageAppended(type="ai", content="", tool_calls=calls))
    assert record.value is not None and len(record.value) < LIMIT
    refusal = ChangeReader(EventCodec(), LIMIT).read(record)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.STORED_OVERSIZE
    assert str(LIMIT) in str(refusal)


def test_plain_text_that_escapes_past_the_limit_is_refused_on_the_fast_path() -> None:
    """Control characters stored as JSON escapes grow six-fold: the fast path checks too."""
    record = _record(MessageAppended(type="human", content="\x01" * (LIMIT // 2)))
    refusal = ChangeReader(EventCodec(), LIMIT).read(record)
    assert isinstance(refusal, Refusal)
    assert refusal.reason is RefusalReason.STORED_OVERSIZE


def test_a_message_stored_within_the_limit_is_a_change() -> None:
    """The limit itself is allowed: an ordinary message reads as before."""
    change = ChangeReader(EventCodec(), LIMIT).read(
        _record(MessageAppended(type="human", content="hello"))
    )
    assert isinstance(change, Change)
