"""A hand-written Avro writer for message events of the newest ``chatlog.ChatEvent`` schema (v4).

Every ``add_messages`` encodes each message; fastavro's generic writer
(a schema walk, a union resolution per field, a file-object write per
field) took about 33 µs of an event's cost, most of a one-message append's
encode path. This writer lays out the bytes of the one schema the producer
writes in a few microseconds, for the events that make up the log: a
:class:`MessageAppended` without tool calls or usage metadata, with a UTC
event time in whole milliseconds. Anything else, and anything it cannot
encode (a value of the wrong type, a lone surrogate), returns ``None`` and
goes through fastavro, so errors stay fastavro's.

It returns exactly fastavro's bytes for every event it writes
(``tests/unit/test_event_writer.py`` checks that against fastavro).
"""

from __future__ import annotations

from datetime import datetime, timezone

from chatlog.schemas.events import ChatEvent, MessageAppended

#: The schema this writer is written for: ``(record name, version)``.
# v3 and v4 only appended payload branches (MessagesAppended, MessageSealed,
# MessagesSealed): a MessageAppended body (branch 0) is laid out as in v2.
SCHEMA = ("chatlog.ChatEvent", 4)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Zig-zag varints of 0..63, the lengths and branch numbers most fields need.
_SMALL = [bytes([n << 1]) for n in range(64)]
_NULL = b"\x00"
_SOME = b"\x02"  # union branch 1 of [null, X]
#: Payload union branch 0 (MessageAppended), then content branch 0 (string).
_MESSAGE_WITH_TEXT = b"\x00"
#: tool_calls and invalid_tool_calls empty, usage_metadata null.
_NO_CALLS_NO_USAGE = b"\x00\x00\x00"
_STR_TYPES = {str}
_OPTIONAL_TYPES = frozenset({str, type(None)})


def _long(value: int) -> bytes:
    """Avro ``long``: zig-zag, then a little-endian base-128 varint."""
    if 0 <= value < 64:
        return _SMALL[value]
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def _string(value: str) -> bytes:
    data = value.encode()
    size = len(data)
    return (_SMALL[size] if size < 64 else _long(size)) + data


def _optional(value: str | None) -> bytes:
    return _NULL if value is None else _SOME + _string(value)


def write_event(event: ChatEvent) -> bytes | None:
    """The Avro body (no single-object header) of ``event``, or ``None`` to use fastavro."""
    payload = event.payload
    if type(payload) is not MessageAppended or payload.tool_calls or (
        payload.invalid_tool_calls or payload.usage_metadata is not None
    ):
        return None
    occurred = event.occurred_at
    if (
        type(occurred) is not datetime or occurred.tzinfo is not timezone.utc
        or occurred.microsecond % 1000
    ):
        return None
    content = payload.content
    # Plain type tests, no generator: this runs once per message written.
    if {
        type(event.event_id), type(event.session_id), type(payload.type),
        type(payload.additional_kwargs), type(payload.response_metadata), type(payload.extra),
    } != _STR_TYPES or not _OPTIONAL_TYPES.issuperset((
        type(event.user_id), type(event.source), type(payload.name), type(payload.id),
        type(payload.role), type(payload.tool_call_id), type(payload.artifact),
        type(payload.status),
    )):
        return None
    text: str | None = None
    texts: tuple[str, ...] = ()
    if type(content) is str:
        text = content
    elif type(content) is tuple and content and set(map(type, content)) == _STR_TYPES:
        texts = content
    else:
        return None
    delta = occurred - _EPOCH
    millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    try:
        body = _MESSAGE_WITH_TEXT + _string(text) if text is not None else (
            _SOME + _long(len(texts)) + b"".join(map(_string, texts)) + _NULL
        )
        return b"".join((
            _string(event.event_id),
            _string(event.session_id),
            _optional(event.user_id),
            _long(millis),
            _optional(event.source),
            b"\x00",  # payload union branch 0: MessageAppended
            _string(payload.type),
            body,
            _optional(payload.name),
            _optional(payload.id),
            _optional(payload.role),
            _NO_CALLS_NO_USAGE,
            _optional(payload.tool_call_id),
            _optional(payload.artifact),
            _optional(payload.status),
            _string(payload.additional_kwargs),
            _string(payload.response_metadata),
            _string(payload.extra),
        ))
    except UnicodeEncodeError:
        return None  # a lone surrogate: fastavro raises its own error for it
