"""Fuzzing EventCodec.decode: whatever the bytes, the only error is EventDecodeError."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatlog.errors import EventDecodeError
from chatlog.schemas.codec import MAGIC, EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended, SessionCleared, ToolCall
from chatlog.schemas.stored import stored_message

codec = EventCodec()
FINGERPRINTS = [v.fingerprint for v in codec.registry.versions]

texts = st.text(max_size=40)
payloads = st.one_of(
    st.builds(SessionCleared),
    st.builds(
        MessageAppended,
        type=st.sampled_from(["human", "ai", "system", "tool", "chat", "bogus"]),
        content=st.one_of(texts, st.lists(texts, max_size=3).map(tuple)),
        name=st.none() | texts,
        id=st.none() | texts,
        tool_calls=st.lists(
            st.builds(ToolCall, name=texts, args=st.just('{"a":1}'), id=st.none() | texts),
            max_size=2,
        ).map(tuple),
        additional_kwargs=st.sampled_from(["{}", '{"k":[1,2]}', "{oops", "[]"]),
    ),
)
events = st.builds(
    ChatEvent,
    session_id=st.text(min_size=1, max_size=30),
    payload=payloads,
    user_id=st.none() | texts,
    source=st.none() | texts,
    occurred_at=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
        timezones=st.just(timezone.utc),
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_refuse(data: bytes) -> ChatEvent | None:
    """Decode ``data``; a refusal must be EventDecodeError, anything else fails the test."""
    try:
        event = codec.decode(data)
    except EventDecodeError:
        return None
    if isinstance(event.payload, MessageAppended):
        # What the projector does next must also refuse only with the typed error.
        with contextlib.suppress(EventDecodeError):
            stored_message(event.payload)
    return event


@FUZZ
@given(st.binary(max_size=512))
@example(b"")
@example(MAGIC)
@example(b"\x80\x04\x95")  # a pickle's first bytes
def test_random_bytes_only_ever_raise_event_decode_error(data: bytes) -> None:
    """Arbitrary bytes decode to an event or raise EventDecodeError, never anything else."""
    _decode_or_refuse(data)


@FUZZ
@given(st.sampled_from(FINGERPRINTS), st.binary(max_size=512))
@example(FINGERPRINTS[-1], b"\xff" * 16)  # huge zig-zag lengths and counts
@example(FINGERPRINTS[-1], b"\x01" * 64)  # negative counts
def test_known_fingerprint_with_random_body_only_raises_event_decode_error(
    fingerprint: bytes, body: bytes
) -> None:
    """A valid header in front of garbage decodes or raises EventDecodeError."""
    _decode_or_refuse(MAGIC + fingerprint + body)


@FUZZ
@given(events, st.data())
def test_truncated_events_raise_event_decode_error(event: ChatEvent, data: st.DataObject) -> None:
    """Every strict prefix of a valid encoding is refused with EventDecodeError."""
    encoded = codec.encode(event)
    assert codec.decode(encoded) == event
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")
    try:
        codec.decode(encoded[:cut])
    except EventDecodeError:
        return
    raise AssertionError(f"a {cut}-byte prefix of a {len(encoded)}-byte event decoded")


@FUZZ
@given(events, st.data())
def test_corrupted_events_decode_or_raise_event_decode_error(
    event: ChatEvent, data: st.DataObject
) -> None:
    """Flipping bytes of a valid encoding never yields an untyped error."""
    encoded = bytearray(codec.encode(event))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="flips")):
        index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="index")
        encoded[index] ^= data.draw(st.integers(min_value=1, max_value=255), label="mask")
    _decode_or_refuse(bytes(encoded))
