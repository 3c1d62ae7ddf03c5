"""ChatEvent v2: the lifecycle events round-trip and v1 events stay readable."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources

import pytest
from langchain_core.messages import AIMessage

from chatlog.errors import EventDecodeError
from chatlog.histories.messages import to_event
from chatlog.schemas import (
    ChatEvent,
    EventCodec,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    UserDeleted,
)
from chatlog.schemas.codec import SchemaRegistry
from chatlog.schemas.events import USER_EVENT_SESSION_ID, Payload

AT = datetime(2026, 3, 4, 5, 6, 7, 89000, tzinfo=timezone.utc)


def _chat_event_versions() -> dict[int, object]:
    return {v.version: v for v in SchemaRegistry().versions if v.name == "chatlog.ChatEvent"}


@pytest.mark.parametrize(
    "payload",
    [SessionDeleted(), UserDeleted(), SessionTtlSet(60_000), SessionTtlSet(0), SessionTtlSet()],
    ids=repr,
)
def test_lifecycle_events_round_trip(payload: Payload) -> None:
    """Every lifecycle payload survives encode → decode with its envelope."""
    codec = EventCodec()
    session = USER_EVENT_SESSION_ID if isinstance(payload, UserDeleted) else "s1"
    event = ChatEvent(session, payload, user_id="alice", source="app", occurred_at=AT)
    assert codec.decode(codec.encode(event)) == event


def test_v1_events_decode_with_the_v2_reader() -> None:
    """An event written with schema v1 (old logs) is read by today's codec unchanged."""
    versions = _chat_event_versions()
    assert {1, 2} <= set(versions)
    old_writer = EventCodec(SchemaRegistry([versions[1]]))  # type: ignore[list-item]
    today = EventCodec()
    assert today.registry.latest.version >= 2
    for payload in (to_event(AIMessage("hi", id="m1")), SessionCleared()):
        event = ChatEvent("s1", payload, user_id="bob", occurred_at=AT)
        data = old_writer.encode(event)
        assert data[2:10] == versions[1].fingerprint  # type: ignore[attr-defined]
        assert today.decode(data) == event


def test_v1_schema_file_is_unchanged() -> None:
    """The released v1 schema keeps its fingerprint: old events name it forever."""
    assert _chat_event_versions()[1].fingerprint.hex() == "71c2a79729f4db36"  # type: ignore[attr-defined]
    text = resources.files("chatlog.schemas").joinpath("avsc/chatlog.ChatEvent.v1.avsc")
    assert "SessionDeleted" not in text.read_text(encoding="utf-8")


def test_v1_reader_cannot_read_a_lifecycle_event() -> None:
    """A chatlog that only knows v1 refuses v2 events clearly (upgrade) instead of misreading."""
    old = EventCodec(SchemaRegistry([_chat_event_versions()[1]]))  # type: ignore[list-item]
    with pytest.raises(EventDecodeError, match="upgrade"):
        old.decode(EventCodec().encode(ChatEvent("s1", SessionDeleted())))
