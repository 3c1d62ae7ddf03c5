"""read_change gives the fields read_event + stored_message give, or None, never others."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatlog.errors import EventDecodeError
from chatlog.projector.change_reader import ChangeFields, read_change
from chatlog.schemas.codec import HEADER_SIZE, EventCodec
from chatlog.schemas.event_reader import (
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    PLAIN_TAIL,
    read_event,
)
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    UserDeleted,
)
from chatlog.schemas.stored import (
    MESSAGE_TYPES,
    PLAIN_TEMPLATES_UTF8,
    plain_message_utf8,
    stored_message,
)
from chatlog.ttl import MAX_TTL_MS
from tests.helpers import events

codec = EventCodec()

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"

#: Content that needs care in JSON: escapes, characters JSON leaves alone, non-ASCII.
TRICKY_CONTENT = [
    "",
    "plain ascii",
    'say "hi"',
    "back\\slash",
    "\\u0041 is not an escape here",
    "é à ü, ß",
    "日本語のテキスト",
    "emoji 😀 and 👩‍👩‍👧",
    "\u2028 line and paragraph \u2029 separators",
    "delete \x7f",
    "nbsp\u00a0and\u0085next line",
    "\ufeffbom",
    "line\nbreak\r\n\ttab",
    *(f"control {chr(c)} char" for c in range(0x20)),
    "x" * 63,
    "x" * 64,
    "y" * 8191,
    "y" * 8192,
    "é" * 5000,
]

plain_messages = st.builds(
    MessageAppended,
    type=st.sampled_from([*sorted(MESSAGE_TYPES), "bogus", "remove"]),
    content=st.text(max_size=300) | st.sampled_from(TRICKY_CONTENT),
)
lifecycle_payloads = st.one_of(
    st.builds(SessionCleared),
    st.builds(SessionDeleted),
    st.builds(UserDeleted),
    st.builds(SessionTtlSet, ttl_ms=st.none() | st.integers(-(2**63), 2**63 - 1)),
)
#: The envelopes of test_event_reader's events around plain messages.
plain_events = st.builds(replace, events, payload=plain_messages)
all_events = st.one_of(events, plain_events, st.builds(replace, events, payload=lifecycle_payloads))

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _has_plain_template(payload: object) -> bool:
    """Whether stored_message renders ``payload`` through its plain template."""
    return (
        isinstance(payload, MessageAppended)
        and isinstance(payload.content, str)
        and payload == MessageAppended(payload.type, payload.content)
        and payload.type.encode() in PLAIN_TEMPLATES_UTF8
    )


def _slow_fields(data: bytes, start: int) -> ChangeFields:
    """What the projector's slow path makes of ``data``: read_event, then stored_message."""
    event = read_event(data, start)
    payload = event.payload
    ms = (event.occurred_at - EPOCH) // timedelta(milliseconds=1)
    op, arg, key = "A", b"", ""
    if isinstance(payload, MessageAppended):
        arg = stored_message(payload).encode()
        key = payload.id or ""
    elif isinstance(payload, SessionCleared):
        op = "C"
    elif isinstance(payload, SessionDeleted):
        op = "D"
    elif isinstance(payload, UserDeleted):
        op = "U"
    else:
        op = "T"
        ttl = payload.ttl_ms
        arg = b"" if ttl is None else str(min(max(ttl, 0), MAX_TTL_MS)).encode()
    return (event.session_id, event.user_id or "", ms, op, arg, key)


def _assert_safe(data: bytes, start: int = HEADER_SIZE) -> ChangeFields | None:
    """The safety contract: fields only where the slow path gives the same ones."""
    try:
        fields = read_change(data, start)
    except EventDecodeError:
        # Raising is fine only where read_event refuses the bytes too.
        with pytest.raises(EventDecodeError):
            read_event(data, start)
        return None
    if fields is not None:
        assert fields == _slow_fields(data, start)
    return fields


def _long(value: int, *, padded: bool = False) -> bytes:
    """An Avro long; ``padded`` spells it with one byte more than it needs (still valid)."""
    zigzag = (value << 1) ^ (value >> 63) if -(2**63) <= value < 2**63 else value << 1
    out = bytearray()
    while zigzag >= 0x80:
        out.append(zigzag & 0x7F | 0x80)
        zigzag >>= 7
    if padded:
        out += bytes([zigzag | 0x80, 0])
    else:
        out.append(zigzag)
    return bytes(out)


def _string(text: str, *, padded: bool = False) -> bytes:
    raw = text.encode()
    return _long(len(raw), padded=padded) + raw


def _body(ms: int = 1_700_000_000_000, payload: bytes = b"\x02", *, event_id: str = UUID) -> bytes:
    """A v2 body by hand: ids, null user and source, ``payload`` (branch and fields)."""
    return _string(event_id) + _string("s1") + b"\x00" + _long(ms) + b"\x00" + payload


@FUZZ
@given(all_events)
def test_every_valid_event_gives_the_slow_paths_fields_or_none(event: ChatEvent) -> None:
    """Plain messages and lifecycle events always get fields; other messages may get None.

    Sealed messages always get None: only the key store opens them; conditional
    appends (sealed or not) too: the full decoder reads them.
    """
    data = codec.encode(event)
    fields = read_change(data, HEADER_SIZE)
    payload = event.payload
    if isinstance(payload, (MessageSealed, MessagesAppended, MessagesSealed)):
        assert fields is None
        return
    if fields is None:
        assert isinstance(payload, MessageAppended)
        assert not _has_plain_template(payload)
    else:
        assert fields == _slow_fields(data, HEADER_SIZE)
        assert fields[0] == event.session_id
    if not isinstance(payload, MessageAppended) or _has_plain_template(payload):
        assert fields is not None


@settings(max_examples=300, deadline=None)
@given(plain_events)
def test_plain_messages_give_the_stored_json_byte_for_byte(event: ChatEvent) -> None:
    """Every plain message of a type with a template: op "A" and exactly stored_message's JSON."""
    data = codec.encode(event)
    fields = read_change(data, HEADER_SIZE)
    if _has_plain_template(event.payload):
        assert fields is not None
        assert fields[3:] == ("A", stored_message(event.payload).encode(), "")
        assert fields == _slow_fields(data, HEADER_SIZE)
    else:
        assert fields is None


@pytest.mark.parametrize("content", TRICKY_CONTENT)
@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
def test_tricky_content_renders_like_stored_message(kind: str, content: str) -> None:
    """Escapes, U+2028/9, U+007F, emoji, empty and long text; tool and chat types give None."""
    event = ChatEvent("s", MessageAppended(kind, content), user_id="u", event_id=UUID)
    data = codec.encode(event)
    fields = read_change(data, HEADER_SIZE)
    if kind.encode() in PLAIN_TEMPLATES_UTF8:
        assert fields is not None
        stored = stored_message(event.payload).encode()
        assert fields[:2] + fields[3:] == ("s", "u", "A", stored, "")
        assert fields == _slow_fields(data, HEADER_SIZE)
    else:
        assert fields is None


@given(st.text(), st.sampled_from(sorted(PLAIN_TEMPLATES_UTF8)))
@example("\x00\x1f\"\\\x7f\u2028\u2029", b"human")
def test_any_text_renders_like_stored_message(content: str, kind: bytes) -> None:
    """Any Unicode text at all, in a body built by hand (no envelope strategy)."""
    body = _body(payload=b"\x00" + _string(kind.decode()) + b"\x00" + _string(content))
    fields = read_change(body + PLAIN_TAIL, 0)
    assert fields is not None
    assert fields[4] == stored_message(MessageAppended(kind.decode(), content)).encode()


def test_plain_message_utf8_refuses_broken_utf8_and_leaves_untemplated_types() -> None:
    """Invalid UTF-8 content is an EventDecodeError; tool, chat and unknown types give None."""
    for broken in (b"\xff", b"ok \xc3", b"\xed\xa0\x80"):  # the last: a UTF-8 surrogate
        with pytest.raises(EventDecodeError, match="UTF-8"):
            plain_message_utf8(b"human", broken)
    for kind in (b"tool", b"chat", b"bogus", b"\xff"):
        assert plain_message_utf8(kind, b"text") is None


def test_lifecycle_events_give_their_op_and_arg() -> None:
    """C, D, U with no arg; T with the clamped TTL, or no arg for the default."""
    cases = [
        (SessionCleared(), "C", b""),
        (SessionDeleted(), "D", b""),
        (UserDeleted(), "U", b""),
        (SessionTtlSet(None), "T", b""),
        (SessionTtlSet(0), "T", b"0"),
        (SessionTtlSet(86_400_000), "T", b"86400000"),
        (SessionTtlSet(-5), "T", b"0"),
    ]
    for payload, op, arg in cases:
        event = ChatEvent("s", payload, user_id=None, event_id=UUID)
        fields = read_change(codec.encode(event), HEADER_SIZE)
        ms = (event.occurred_at - EPOCH) // timedelta(milliseconds=1)
        assert fields == ("s", "", ms, op, arg, "")


@pytest.mark.parametrize(
    "ms",
    [
        *(0, -1, 1, MIN_EVENT_MS, MIN_EVENT_MS - 1, MAX_EVENT_MS, MAX_EVENT_MS + 1),
        *(2**63 - 1, -(2**63), 2**64, 2**69),
    ],
)
def test_event_times_at_the_edges_of_datetime_give_fields_only_where_read_event_works(
    ms: int,
) -> None:
    """Inside year 1..9999 the exact millisecond; outside (read_event overflows) None."""
    for body in (_body(ms), _body(ms, b"\x00\x0ahuman\x00\x04hi" + PLAIN_TAIL)):
        fields = _assert_safe(body, 0)
        assert (fields is not None) == (MIN_EVENT_MS <= ms <= MAX_EVENT_MS)
        if fields is not None:
            assert fields[2] == ms


def test_a_non_canonical_event_id_is_left_to_read_event() -> None:
    """Upper case, braces or no dashes: read_event normalizes them, read_change says None."""
    for spelling in (UUID.upper(), "{" + UUID + "}", UUID.replace("-", "")):
        body = _body(event_id=spelling)
        assert read_event(body, 0).event_id == UUID
        assert read_change(body, 0) is None
    with pytest.raises(EventDecodeError):
        read_event(_body(event_id="not-a-uuid-at-all-but-36-bytes-long!"), 0)
    assert read_change(_body(event_id="not-a-uuid-at-all-but-36-bytes-long!"), 0) is None


def test_unusual_but_valid_encodings_give_the_same_fields_or_none() -> None:
    """Padded varints and multi-byte lengths go through BodyReader or back to the slow path."""
    message = b"\x00" + _string("human") + b"\x00" + _string("hi") + PLAIN_TAIL
    bodies = [
        _string(UUID) + _string("s1", padded=True) + b"\x00" + _long(5) + b"\x00\x02",
        _string(UUID) + _string("s" * 70) + b"\x02" + _string("u" * 100) + _long(5)
        + b"\x02" + _string("x" * 200) + b"\x02",
        _string(UUID) + _string("s1") + b"\x80\x00" + _long(5) + b"\x80\x00\x02",
        _string(UUID) + _string("s1") + b"\x02" + _string("u", padded=True) + _long(5)
        + b"\x02" + _string("src", padded=True) + b"\x02",
        _string(UUID) + _string("s1") + b"\x00" + _long(5, padded=True) + b"\x00" + message,
        _body(payload=b"\x82\x00"),
        _body(payload=b"\x08\x82\x00" + _long(7, padded=True)),
        _body(payload=b"\x00" + _string("human", padded=True) + b"\x00" + _string("hi")
              + PLAIN_TAIL),
        _body(payload=b"\x00" + _string("human") + b"\x00" + _string("hi", padded=True)
              + PLAIN_TAIL),
        _body(payload=b"\x00" + _string("human") + b"\x00" + _string("z" * 10_000)
              + PLAIN_TAIL),
    ]
    for body in bodies:
        read_event(body, 0)  # valid, however odd
        _assert_safe(body, 0)
    assert read_change(bodies[1], 0) == ("s" * 70, "u" * 100, 5, "C", b"", "")
    assert read_change(bodies[9], 0) is not None


def test_trailing_bytes_raise_event_decode_error() -> None:
    """A lifecycle event with bytes after the record is refused, as read_event refuses it."""
    for payload in (b"\x02", b"\x04", b"\x06", b"\x08\x00", b"\x08\x02\x0a"):
        _assert_safe(_body(payload=payload), 0)
        with pytest.raises(EventDecodeError, match="trailing"):
            read_change(_body(payload=payload) + b"\x00", 0)


@FUZZ
@given(st.binary(max_size=512))
@example(b"")
@example(b"\x48" + UUID.encode() + b"\xff" * 16)  # huge zig-zag lengths
@example(b"\x48" + UUID.encode() + b"\x01" * 64)  # negative lengths
@example(b"\x48" + UUID.encode() + b"\x04s1\x00" + b"\xff" * 11)  # an 11-byte varint
def test_random_bytes_only_ever_raise_event_decode_error(data: bytes) -> None:
    """Arbitrary bytes give None, EventDecodeError, or the slow path's own fields."""
    _assert_safe(data, 0)


SAMPLE_EVENTS = [
    ChatEvent("s1", MessageAppended("human", "plain text " * 10), user_id="u1", source="app"),
    ChatEvent("s" * 70, MessageAppended("ai", "é😀 and \"quotes\"\n" * 5), user_id="u" * 64),
    ChatEvent("s1", MessageAppended("tool", "result"), user_id="u1"),
    ChatEvent("s1", SessionCleared(), user_id="u1", source="app"),
    ChatEvent("s1", SessionDeleted()),
    ChatEvent("", UserDeleted(), user_id="u1"),
    ChatEvent("s1", SessionTtlSet(86_400_000), user_id="u1"),
    ChatEvent("s1", SessionTtlSet(None), source="app"),
]


@pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=lambda e: e.event_type)
def test_every_single_byte_corruption_of_sample_events_is_safe(event: ChatEvent) -> None:
    """Every body byte XORed with a few masks never gives fields the slow path would not give.

    The masks turn lengths negative (the zig-zag sign bit), make varints longer
    and break UTF-8, at every position of the body.
    """
    encoded = codec.encode(event)
    for index in range(HEADER_SIZE, len(encoded)):
        for mask in (0x01, 0x02, 0x40, 0x7F, 0x80, 0xC0, 0xFF):
            corrupted = bytearray(encoded)
            corrupted[index] ^= mask
            _assert_safe(bytes(corrupted))


def test_an_overlong_event_time_varint_is_refused() -> None:
    """Eleven varint bytes are refused by read_event even when they spell a small number."""
    for varint in (b"\x80" * 10 + b"\x00", b"\x82" + b"\x80" * 9 + b"\x00"):
        body = _string(UUID) + _string("s1") + b"\x00" + varint + b"\x00\x02"
        with pytest.raises(EventDecodeError):
            read_event(body, 0)
        with pytest.raises(EventDecodeError, match="10 bytes"):
            read_change(body, 0)


@FUZZ
@given(all_events, st.data())
def test_truncated_events_never_give_fields(event: ChatEvent, data: st.DataObject) -> None:
    """Every strict prefix of a valid encoding is refused or left to read_event (which refuses)."""
    encoded = codec.encode(event)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")
    assert _assert_safe(encoded[:cut]) is None


@FUZZ
@given(all_events, st.data())
def test_corrupted_events_give_the_slow_paths_fields_or_nothing(
    event: ChatEvent, data: st.DataObject
) -> None:
    """Flipping bytes of a valid encoding never gives fields the slow path would not give."""
    encoded = bytearray(codec.encode(event))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="flips")):
        index = data.draw(st.integers(min_value=HEADER_SIZE, max_value=len(encoded) - 1))
        encoded[index] ^= data.draw(st.integers(min_value=1, max_value=255), label="mask")
    _assert_safe(bytes(encoded))


@FUZZ
@given(all_events, st.data())
def test_spliced_events_give_the_slow_paths_fields_or_nothing(
    event: ChatEvent, data: st.DataObject
) -> None:
    """Bytes inserted into or cut out of a valid encoding (lengths then point elsewhere)."""
    encoded = codec.encode(event)
    at = data.draw(st.integers(min_value=HEADER_SIZE, max_value=len(encoded)), label="at")
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - at), label="cut")
    insert = data.draw(st.binary(max_size=8), label="insert")
    _assert_safe(encoded[:at] + insert + encoded[at + cut :])


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
def test_plain_messages_with_ids_take_the_shortcut_byte_for_byte(kind: str) -> None:
    """Messages as chatlog writes them (a uuid4 id) are read without the slow path, exactly."""
    for content in ("hello", "", "x" * 300, "é", 'q"uote'):
        for message_id in (str(uuid.uuid4()), "m-1", "x" * 70, 'a"b', "é"):
            event = ChatEvent("s", MessageAppended(kind, content, id=message_id), user_id="u")
            data = codec.encode(event)
            fields = read_change(data, HEADER_SIZE)
            if fields is None:
                continue
            assert fields == _slow_fields(data, HEADER_SIZE)
            assert fields[5] == message_id
    plain = ChatEvent("s", MessageAppended(kind, "hi", id=str(uuid.uuid4())), user_id="u")
    assert (read_change(codec.encode(plain), HEADER_SIZE) is None) == (
        kind.encode() not in PLAIN_TEMPLATES_UTF8
    )
