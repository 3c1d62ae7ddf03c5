"""The hand-written v2 reader returns exactly what fastavro's generic path returns."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlog.schemas.codec import HEADER_SIZE, EventCodec, event_from_avro
from chatlog.schemas.event_reader import SCHEMA, read_event
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    SessionCleared,
)
from tests.helpers import events, optional

codec = EventCodec()


def _fastavro_decode(data: bytes) -> ChatEvent:
    """The generic path the codec takes for other schema versions."""
    import fastavro

    buffer = io.BytesIO(data)
    buffer.seek(HEADER_SIZE)
    record = fastavro.schemaless_reader(
        buffer, codec.registry.latest.parsed, None,
        return_record_name=True, return_record_name_override=True,
    )
    return event_from_avro(record)


def test_reader_is_written_for_the_schema_the_producer_writes() -> None:
    """The newest ChatEvent schema is the one the fast reader handles (else it goes unused)."""
    latest = codec.registry.latest
    assert (latest.name, latest.version) == SCHEMA


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_reader_and_fastavro_agree_on_every_valid_encoding(event: ChatEvent) -> None:
    """Field for field, including uuid and timestamp-millis conversions and unions."""
    data = codec.encode(event)
    fast = read_event(data, HEADER_SIZE)
    assert fast == _fastavro_decode(data) == event
    assert codec.decode(data) == event


def test_non_canonical_uuid_spelling_is_normalized_like_fastavro() -> None:
    """An upper-case event id comes back as str(UUID(...)), as fastavro's uuid type gives it."""
    event = ChatEvent("s", SessionCleared(), event_id="A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")
    data = codec.encode(event)
    assert read_event(data, HEADER_SIZE).event_id == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert read_event(data, HEADER_SIZE) == _fastavro_decode(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["human", "ai", "system", "tool", "chat"]), st.text(max_size=600), optional)
def test_plain_messages_agree_with_fastavro(kind: str, content: str, user: str | None) -> None:
    """Messages with nothing but a type and text (the reader's shortcut) decode the same."""
    event = ChatEvent("s", MessageAppended(kind, content), user_id=user, source="app")
    data = codec.encode(event)
    assert read_event(data, HEADER_SIZE) == _fastavro_decode(data) == event
