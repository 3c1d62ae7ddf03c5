"""A hand-written Avro reader for the newest ``chatlog.ChatEvent`` schema (v4).

A v2 or v3 body is a v4 body without the last payload branches, so it reads all three.

The projector decodes every event of the log, and fastavro's generic reader
(a file-object read per field, then the ``uuid``/``timestamp-millis``
logical-type conversions, then the dataclasses built from its dicts) cost
about 19 µs of an event's budget. This reader walks the bytes of the one
schema the producer writes, straight into the event dataclasses, in about a
third of that. Events written with any other schema version, which need
schema resolution, still go through fastavro (:class:`EventCodec` picks).

It returns exactly what the fastavro path returns for every valid encoding
(``tests/unit/test_event_reader.py`` checks that against fastavro) and
raises only :class:`EventDecodeError` on anything else.

The projector's byte-level shortcut for the read model
(:func:`chatlog.projector.change_reader.read_change`) reads with the same
:class:`BodyReader` and the constants below.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar
from uuid import UUID

from chatlog.errors import EventDecodeError
from chatlog.schemas.events import (
    ChatEvent,
    InvalidToolCall,
    MessageAppended,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
    Payload,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    ToolCall,
    UsageMetadata,
    UserDeleted,
)

#: An array item's type (:func:`_array`).
T = TypeVar("T")

#: The schema this reader is written for: ``(record name, version)``.
SCHEMA = ("chatlog.ChatEvent", 4)
#: How many payload branches the newest schema has.
PAYLOAD_BRANCHES = 8
#: Older schemas whose bodies are read the same way, and how many payload
#: branches each has: v3 appended ``MessagesAppended`` and ``MessageSealed``
#: to the payload union, v4 ``MessagesSealed``; the rest is v2 byte for byte.
OLDER_SCHEMAS = {("chatlog.ChatEvent", 2): 5, ("chatlog.ChatEvent", 3): 7}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: What follows the content of a message with nothing else set, to the end of
#: the event: nine nulls and empty arrays, then three "{}" strings. Most
#: messages are like that; they skip a dozen field reads.
PLAIN_TAIL = b"\x00" * 9 + b"\x04{}" * 3
# What str(UUID(...)) returns: such ids are kept as they are, any other
# spelling goes through UUID() like fastavro's uuid logical type does.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_canonical_uuid = _CANONICAL_UUID.fullmatch
#: The same on the bytes of the event, in one C call (a third of the regex's
#: time): a canonical id is :data:`CANONICAL_UUID_SHAPE` after this translation.
UUID_SHAPE = bytes(
    0x30 if c in b"0123456789abcdef" else 0x2D if c == 0x2D else 0x78 for c in range(256)
)
CANONICAL_UUID_SHAPE = b"00000000-0000-0000-0000-000000000000"
#: The event times (epoch ms) read_event can represent: the epoch plus a
#: timedelta overflows outside datetime's years 1..9999.
MIN_EVENT_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1)
MAX_EVENT_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1)

class BodyReader:
    """A cursor over one event's bytes; every read raises IndexError past the end.

    Public for the projector's shortcut reader, which falls back to it for
    every form it does not read inline, so both fail alike.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def long(self) -> int:
        """The next zig-zag varint (Avro ``long``/``int``)."""
        data, pos = self.data, self.pos
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            self.pos = pos
            return (byte >> 1) ^ -(byte & 1)
        value = byte & 0x7F
        shift = 7
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 63:
                raise EventDecodeError("corrupt event body: a varint longer than 10 bytes")
        self.pos = pos
        return (value >> 1) ^ -(value & 1)

    def string(self) -> str:
        """The next UTF-8 string."""
        data, pos = self.data, self.pos
        size = data[pos]
        if size < 0x80:  # the common one-byte length, read inline
            start = pos + 1
            size >>= 1  # never negative: the zig-zag sign bit of a one-byte length is 1 & size
            if data[pos] & 1:
                raise EventDecodeError("corrupt event body: a string of negative length")
        else:
            size = self.long()
            start = self.pos
        end = start + size
        if size < 0 or end > len(data):
            raise EventDecodeError(f"corrupt event body: a string of {size} bytes")
        self.pos = end
        return data[start:end].decode()

    def optional_string(self) -> str | None:
        """The next ``[null, string]`` union."""
        byte = self.data[self.pos]
        # Union branches 0 (null) and 1 (string) in their one-byte zig-zag form.
        if byte == 0:
            self.pos += 1
            return None
        if byte == 2:
            self.pos += 1
            return self.string()
        branch = self.long()
        if branch == 0:
            return None
        if branch == 1:
            return self.string()
        raise EventDecodeError(f"corrupt event body: union branch {branch} of [null, string]")

    def bytes_(self) -> bytes:
        """The next Avro ``bytes``."""
        size = self.long()
        start = self.pos
        end = start + size
        if size < 0 or end > len(self.data):
            raise EventDecodeError(f"corrupt event body: a bytes value of {size} bytes")
        self.pos = end
        return self.data[start:end]

    def optional_long(self) -> int | None:
        """The next ``[null, long]`` union."""
        branch = self.long()
        if branch == 0:
            return None
        if branch == 1:
            return self.long()
        raise EventDecodeError(f"corrupt event body: union branch {branch} of [null, long]")

    def block(self) -> int:
        """The item count of the next array block (0 ends the array)."""
        count = self.long()
        if count < 0:
            # A negative count is followed by the block's size in bytes.
            count = -count
            self.long()
        return count


def read_event(
    data: bytes, start: int, *, branches: int = PAYLOAD_BRANCHES
) -> ChatEvent:
    """Decode the v4 ``ChatEvent`` body that begins at ``data[start]`` and fills the rest.

    ``branches`` is how many payload branches the writer's schema has (see
    :data:`OLDER_SCHEMAS`): the branches later versions added are refused, as
    fastavro would.

    Raises:
        EventDecodeError: the bytes are not one complete, valid v4 body.
    """
    reader = BodyReader(data, start)
    try:
        event_id = reader.string()
        if _canonical_uuid(event_id) is None:
            event_id = str(UUID(event_id))
        session_id = reader.string()
        user_id = reader.optional_string()
        occurred_at = _EPOCH + timedelta(microseconds=reader.long() * 1000)
        source = reader.optional_string()
        payload = _payload(reader, branches)
    except EventDecodeError:
        raise
    except (IndexError, ValueError, OverflowError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventDecodeError(f"corrupt event body: {type(exc).__name__}: {exc}") from exc
    if reader.pos != len(data):
        raise EventDecodeError(
            f"corrupt event body: {len(data) - reader.pos} trailing bytes after the record"
        )
    return ChatEvent(
        session_id=session_id,
        payload=payload,
        user_id=user_id,
        source=source,
        event_id=event_id,
        occurred_at=occurred_at,
    )


def _payload(reader: BodyReader, branches: int) -> Payload:
    branch = reader.long()
    if branch >= branches:
        raise EventDecodeError(f"corrupt event body: payload union branch {branch}")
    if branch == 0:
        return _message(reader)
    if branch == 1:
        return SessionCleared()
    if branch == 2:
        return SessionDeleted()
    if branch == 3:
        return UserDeleted()
    if branch == 4:
        return SessionTtlSet(ttl_ms=reader.optional_long())
    if branch == 6:
        return _sealed(reader)
    if branch == 5:
        expected = reader.long()
        return MessagesAppended(expected, _array(reader, _message))
    if branch == 7:
        expected = reader.long()
        return MessagesSealed(expected, _array(reader, _sealed))
    raise EventDecodeError(f"corrupt event body: payload union branch {branch}")


def _array(reader: BodyReader, item: Callable[[BodyReader], T]) -> tuple[T, ...]:
    """The next Avro array, each item read by ``item``."""
    items: list[T] = []
    count = reader.block()
    while count:
        items.extend(item(reader) for _ in range(count))
        count = reader.block()
    return tuple(items)


def _sealed(reader: BodyReader) -> MessageSealed:
    return MessageSealed(
        reader.string(),
        reader.string(),
        reader.string(),
        reader.optional_string(),
        reader.bytes_(),
        reader.bytes_(),
    )


def _message(reader: BodyReader) -> MessageAppended:
    kind = reader.string()
    branch = reader.long()
    content: str | tuple[str, ...]
    if branch == 0:
        content = reader.string()
    elif branch == 1:
        parts: list[str] = []
        count = reader.block()
        while count:
            parts.extend(reader.string() for _ in range(count))
            count = reader.block()
        content = tuple(parts)
    else:
        raise EventDecodeError(f"corrupt event body: content union branch {branch}")
    if reader.data[reader.pos :] == PLAIN_TAIL:
        reader.pos = len(reader.data)
        return MessageAppended(kind, content)
    name = reader.optional_string()
    message_id = reader.optional_string()
    role = reader.optional_string()
    tool_calls: list[ToolCall] = []
    count = reader.block()
    while count:
        for _ in range(count):
            call_name = reader.string()
            call_args = reader.string()
            tool_calls.append(ToolCall(call_name, call_args, reader.optional_string()))
        count = reader.block()
    invalid: list[InvalidToolCall] = []
    count = reader.block()
    while count:
        for _ in range(count):
            invalid.append(
                InvalidToolCall(
                    reader.optional_string(),
                    reader.optional_string(),
                    reader.optional_string(),
                    reader.optional_string(),
                )
            )
        count = reader.block()
    usage: UsageMetadata | None = None
    branch = reader.long()
    if branch == 1:
        usage = UsageMetadata(reader.long(), reader.long(), reader.long(), reader.optional_string())
    elif branch != 0:
        raise EventDecodeError(f"corrupt event body: usage_metadata union branch {branch}")
    return MessageAppended(
        type=kind,
        content=content,
        name=name,
        id=message_id,
        role=role,
        tool_calls=tuple(tool_calls),
        invalid_tool_calls=tuple(invalid),
        usage_metadata=usage,
        tool_call_id=reader.optional_string(),
        artifact=reader.optional_string(),
        status=reader.optional_string(),
        additional_kwargs=reader.string(),
        response_metadata=reader.string(),
        extra=reader.string(),
    )
