"""The hand-written v3 writer returns exactly fastavro's bytes, or leaves the event to fastavro."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlog.schemas.codec import HEADER_SIZE, EventCodec, SingleObjectCodec
from chatlog.schemas.event_writer import SCHEMA, write_event
from chatlog.schemas.events import ChatEvent, MessageAppended, ToolCall
from tests.helpers import events, optional, texts

codec = EventCodec()


def _fastavro_body(event: ChatEvent) -> bytes:
    """What fastavro's generic writer lays out for ``event`` (the codec's other path)."""
    return SingleObjectCodec.encode(codec, event)[HEADER_SIZE:]


def test_writer_is_written_for_the_schema_the_producer_writes() -> None:
    """The newest ChatEvent schema is the one the hand-written writer lays out."""
    latest = codec.registry.latest
    assert (latest.name, latest.version) == SCHEMA


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_writer_and_fastavro_agree_on_every_event_it_writes(event: ChatEvent) -> None:
    """Byte for byte, including unions, varint lengths, arrays and timestamp-millis."""
    body = write_event(event)
    if body is not None:
        assert body == _fastavro_body(event)
    assert codec.decode(codec.encode(event)) == event


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["human", "ai", "system", "tool", "chat"]),
    st.text(max_size=3000) | st.lists(texts, min_size=1, max_size=70).map(tuple),
    optional, optional,
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                 timezones=st.just(timezone.utc)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
)
def test_message_events_are_written_by_hand_and_agree(
    kind: str, content: str | tuple[str, ...], user: str | None, source: str | None,
    at: datetime,
) -> None:
    """Messages without tool calls or usage, at any UTC millisecond, take the hand-written path."""
    event = ChatEvent("s", MessageAppended(kind, content), user_id=user, source=source,
                      occurred_at=at)
    body = write_event(event)
    assert body is not None
    assert body == _fastavro_body(event)


@pytest.mark.parametrize("event", [
    ChatEvent("s", MessageAppended("ai", "x", tool_calls=(ToolCall("f", "{}", None),))),
    ChatEvent("s", MessageAppended("ai", ())),
    ChatEvent("s", MessageAppended("ai", "x"),
              occurred_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    ChatEvent("s", MessageAppended("ai", "x"),
              occurred_at=datetime(2026, 1, 1, 0, 0, 0, 1500, tzinfo=timezone.utc)),
], ids=["tool-calls", "empty-content-list", "non-utc-time", "sub-millisecond-time"])
def test_other_events_are_left_to_fastavro(event: ChatEvent) -> None:
    """What the writer does not lay out goes through fastavro, with the same result as before."""
    assert write_event(event) is None
    assert codec.encode(event)[HEADER_SIZE:] == _fastavro_body(event)


def test_a_lone_surrogate_fails_as_it_did_through_fastavro() -> None:
    """The writer steps aside, so the error is fastavro's, as the producer expects."""
    event = ChatEvent("s", MessageAppended("human", "bad \ud800"))
    assert write_event(event) is None
    with pytest.raises(UnicodeEncodeError):
        codec.encode(event)
