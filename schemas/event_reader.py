"""A hand-written Avro reader for the newest ``chatlog.ChatEvent`` schema (v2).

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

:func:`read_change` goes further for the projector: from the plain messages
and lifecycle events that make up nearly all of a log it takes only what the
read model needs, the stored JSON of a message included, without building
any event, in about a quarter of the time of :func:`read_event` and
``stored_message`` (``tests/unit/test_change_reader.py`` checks it against
them).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from uuid import UUID

from chatlog.errors import EventDecodeError
from chatlog.schemas.events import (
    ChatEvent,
    InvalidToolCall,
    MessageAppended,
    Payload,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    ToolCall,
    UsageMetadata,
    UserDeleted,
)
from chatlog.schemas.stored import MARK_JSON_ESCAPES, PLAIN_TEMPLATES_UTF8, plain_message_utf8

#: The schema this reader is written for: ``(record name, version)``.
SCHEMA = ("chatlog.ChatEvent", 2)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# What follows the content of a message with nothing else set, to the end of
# the event: nine nulls and empty arrays, then three "{}" strings. Most
# messages are like that; they skip a dozen field reads.
_PLAIN_TAIL = b"\x00" * 9 + b"\x04{}" * 3
# What str(UUID(...)) returns: such ids are kept as they are, any other
# spelling goes through UUID() like fastavro's uuid logical type does.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_canonical_uuid = _CANONICAL_UUID.fullmatch
# The same on the bytes of the event, in one C call (a third of the regex's
# time): a canonical id is one of these 36 bytes after each translation.
_UUID_SHAPE = bytes(
    0x30 if c in b"0123456789abcdef" else 0x2D if c == 0x2D else 0x78 for c in range(256)
)
_CANONICAL_UUID_SHAPE = b"00000000-0000-0000-0000-000000000000"
# The event times read_event can represent: _EPOCH + timedelta() overflows
# outside datetime's years 1..9999.
_MIN_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1)

#: What one event does to the read model: ``(session_id, user_id or "", event
#: time in epoch milliseconds, op, arg)``. See :func:`read_change` for the ops.
ChangeFields = tuple[str, str, int, str, bytes]


class _Reader:
    """A cursor over one event's bytes; every read raises IndexError past the end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def long(self) -> int:
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

    def optional_long(self) -> int | None:
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


def read_event(data: bytes, start: int) -> ChatEvent:
    """Decode the v2 ``ChatEvent`` body that begins at ``data[start]`` and fills the rest.

    Raises:
        EventDecodeError: the bytes are not one complete, valid v2 body.
    """
    reader = _Reader(data, start)
    try:
        event_id = reader.string()
        if _canonical_uuid(event_id) is None:
            event_id = str(UUID(event_id))
        session_id = reader.string()
        user_id = reader.optional_string()
        occurred_at = _EPOCH + timedelta(microseconds=reader.long() * 1000)
        source = reader.optional_string()
        payload = _payload(reader)
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


def read_change(data: bytes, start: int) -> ChangeFields | None:
    """What the v2 ``ChatEvent`` body at ``data[start]`` does to the read model.

    The projector's shortcut past :func:`read_event` and
    :func:`~chatlog.schemas.stored.stored_message`: it takes the few fields the
    read model needs straight from the bytes and builds no event. The op and
    its ``arg``:

    - ``"A"``: a plain message (text content, every other field at its
      default, a type with a plain template) was appended; ``arg`` is
      ``stored_message(payload).encode()``, byte for byte.
    - ``"C"``, ``"D"``, ``"U"``: :class:`SessionCleared`,
      :class:`SessionDeleted`, :class:`UserDeleted`; ``arg`` is ``b""``.
    - ``"T"``: :class:`SessionTtlSet`; ``arg`` is ``str(max(ttl_ms, 0))`` as
      ASCII, or ``b""`` for ``ttl_ms=None``.

    Returns:
        The fields, equal to what :func:`read_event` and ``stored_message``
        give for the same bytes; or ``None`` where the shortcut does not
        apply: any other message, an event id not in canonical form, an event
        time outside ``datetime``'s range, a valid but unusual encoding (such
        as a varint longer than it needs to be). The caller then decodes with
        :func:`read_event`, which also raises the error of an invalid body.
        It never returns fields for a body :func:`read_event` refuses.

    Raises:
        EventDecodeError: the bytes are not a valid v2 body. Only bodies
            :func:`read_event` refuses too; it may also return ``None`` for one.
    """
    # One function with the reads written out: on a plain message a _Reader and
    # its method calls would cost as much as all the rest. The inlined reads
    # take the forms the producer writes (one-byte union branches, lengths of
    # one byte, or two for the content); anything else goes to _Reader, so it
    # means what it means in read_event and fails with the same error. A
    # one-byte string length is an even byte below 0x80 (zig-zag 0..63), hence
    # the tests of ``size & 0x81``. A length running past the end of the data
    # needs no test where another read follows: that read raises IndexError.
    try:
        # The producer writes str(uuid4()): the one-byte length 0x48 (36), then
        # the canonical spelling, the only one kept as it is (else read_event
        # normalizes it through UUID(), which this shortcut leaves to it).
        if (
            data[start] != 0x48
            or data[start + 1 : start + 37].translate(_UUID_SHAPE) != _CANONICAL_UUID_SHAPE
        ):
            return None
        pos = start + 37

        size = data[pos]
        if size & 0x81:
            reader = _Reader(data, pos)
            session_id = reader.string()
            pos = reader.pos
        else:
            end = pos + 1 + (size >> 1)
            session_id = data[pos + 1 : end].decode()
            pos = end

        size = data[pos]
        if size == 2 and not data[pos + 1] & 0x81:  # union branch 1, a short string
            end = pos + 2 + (data[pos + 1] >> 1)
            user_id = data[pos + 2 : end].decode()
            pos = end
        elif size == 0:  # union branch 0: null
            user_id = ""
            pos += 1
        else:
            reader = _Reader(data, pos)
            user_id = reader.optional_string() or ""
            pos = reader.pos

        # The event time always takes several varint bytes (six from 1970 to
        # 2039); this is _Reader.long, with its 10-byte limit.
        byte = data[pos]
        pos += 1
        value = byte & 0x7F
        shift = 7
        while byte >= 0x80:
            if shift > 63:
                raise EventDecodeError("corrupt event body: a varint longer than 10 bytes")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
        ms = (value >> 1) ^ -(value & 1)
        if not _MIN_MS <= ms <= _MAX_MS:
            return None

        # The source is not needed, but read_event refuses it when it is not UTF-8.
        size = data[pos]
        if size == 2 and not data[pos + 1] & 0x81:
            end = pos + 2 + (data[pos + 1] >> 1)
            data[pos + 2 : end].decode()
            pos = end
        elif size == 0:
            pos += 1
        else:
            reader = _Reader(data, pos)
            reader.optional_string()
            pos = reader.pos

        branch = data[pos]
        if branch == 0:  # MessageAppended
            size = data[pos + 1]
            if size & 0x81:
                return None
            end = pos + 2 + (size >> 1)
            kind = data[pos + 2 : end]
            # Content union branch 0 (a string), then its length: one or two
            # varint bytes for up to 8191 bytes of text.
            if data[end] != 0:
                return None
            size = data[end + 1]
            if size < 0x80:
                pos = end + 2
            elif data[end + 2] < 0x80:
                size = (size & 0x7F) | data[end + 2] << 7
                pos = end + 3
            else:  # 8 KiB of text or more
                reader = _Reader(data, end + 1)
                length = reader.long()
                size = length << 1 if length >= 0 else 1  # its zig-zag form, for the test below
                pos = reader.pos
            if size & 1:
                return None  # a negative length, which read_event refuses
            end = pos + (size >> 1)
            # The plain message's tail also ends the data, so there can be no
            # trailing bytes, and the content is all there.
            if data[end:] != _PLAIN_TAIL:
                return None
            template = PLAIN_TEMPLATES_UTF8.get(kind)
            if template is None:
                return None
            content = data[pos:end]
            # The usual message, ASCII text that needs no JSON escape, is
            # rendered here; plain_message_utf8 does all others.
            if content.isascii() and content.translate(MARK_JSON_ESCAPES) == content:
                return (session_id, user_id, ms, "A", template[0] + content + template[1])
            stored = plain_message_utf8(kind, content)
            return None if stored is None else (session_id, user_id, ms, "A", stored)
        pos += 1
        if branch == 2:
            op, arg = "C", b""
        elif branch == 4:
            op, arg = "D", b""
        elif branch == 6:
            op, arg = "U", b""
        elif branch == 8:
            reader = _Reader(data, pos)
            ttl_ms = reader.optional_long()
            pos = reader.pos
            op, arg = "T", b"" if ttl_ms is None else str(max(ttl_ms, 0)).encode()
        else:
            return None
    except EventDecodeError:
        raise
    except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventDecodeError(f"corrupt event body: {type(exc).__name__}: {exc}") from exc
    if pos != len(data):
        raise EventDecodeError(
            f"corrupt event body: {len(data) - pos} trailing bytes after the record"
        )
    return (session_id, user_id, ms, op, arg)


def _payload(reader: _Reader) -> Payload:
    branch = reader.long()
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
    raise EventDecodeError(f"corrupt event body: payload union branch {branch}")


def _message(reader: _Reader) -> MessageAppended:
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
    if reader.data[reader.pos :] == _PLAIN_TAIL:
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
