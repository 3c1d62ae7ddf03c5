"""Changes: what one record of the event log does to the read model.

The projection needs five things from an event (its session, its writer, its
time, what it does and the text it stores), not the event itself. A
:class:`Change` carries exactly those, with the record's coordinates in the
log. :class:`ChangeReader` makes them from Kafka records, straight from the
bytes for the common events (a plain message, a lifecycle event), through
the full decoder for anything else, and says why when a record cannot be
projected (it is then dead-lettered).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from chatlog.errors import ChatLogError, ReadModelError
from chatlog.schemas.codec import HEADER_SIZE, EventCodec
from chatlog.schemas.event_reader import read_change
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    UserDeleted,
)
from chatlog.schemas.stored import stored_message

#: The projection's operation codes (what the apply script switches on) and
#: the event type each stands for.
EVENT_TYPES = {
    "A": "MessageAppended",
    "C": "SessionCleared",
    "D": "SessionDeleted",
    "T": "SessionTtlSet",
    "U": "UserDeleted",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


class Change(NamedTuple):
    """One event of the log as the projection applies it.

    Attributes:
        partition: The record's partition.
        offset: The record's offset.
        session_id: The session it changes (``""`` for a :class:`UserDeleted`).
        user_id: Its writer, ``""`` when it has none.
        event_ms: Its event time, epoch milliseconds.
        op: ``A`` append, ``C`` clear, ``D`` delete session, ``T`` set TTL,
            ``U`` delete user (the keys of :data:`EVENT_TYPES`).
        arg: The stored message JSON (``A``), the TTL in milliseconds or
            ``b""`` for the default (``T``), else ``b""``.
    """

    partition: int
    offset: int
    session_id: str
    user_id: str
    event_ms: int
    op: str
    arg: bytes

    @property
    def event_type(self) -> str:
        """The name of the event record (``MessageAppended``, ...)."""
        return EVENT_TYPES[self.op]


def event_ms(event: ChatEvent) -> int:
    """``event.occurred_at`` in epoch milliseconds, exactly (no float rounding)."""
    return (event.occurred_at - _EPOCH) // _MILLISECOND


def change_of(partition: int, offset: int, event: ChatEvent) -> Change:
    """The change ``event`` makes, at ``partition``/``offset``.

    Raises:
        ChatLogError: the event is valid Avro but cannot be projected (a
            message that is not storable, an unknown payload).
    """
    payload = event.payload
    if isinstance(payload, MessageAppended):
        op, arg = "A", stored_message(payload).encode("utf-8")
    elif isinstance(payload, SessionCleared):
        op, arg = "C", b""
    elif isinstance(payload, SessionDeleted):
        op, arg = "D", b""
    elif isinstance(payload, SessionTtlSet):
        ttl = payload.ttl_ms
        op, arg = "T", b"" if ttl is None else str(max(ttl, 0)).encode()
    elif isinstance(payload, UserDeleted):
        if not event.user_id:
            raise ReadModelError("UserDeleted without a user id")
        op, arg = "U", b""
    else:
        raise ReadModelError(f"no projection for event type {event.event_type}")
    return Change(
        partition, offset, event.session_id, event.user_id or "", event_ms(event), op, arg
    )


class ChangeReader:
    """Reads Kafka records of the event topic into :class:`Change` objects.

    Args:
        codec: The event codec (its registry resolves older schema versions).
        max_event_bytes: Records larger than this are refused (``CHATLOG_MAX_EVENT_BYTES``).
    """

    def __init__(self, codec: EventCodec, max_event_bytes: int) -> None:
        self.codec = codec
        self.max_event_bytes = max_event_bytes
        self._fast_header = codec.fast_header

    def read(self, raw: Any) -> Change | str:
        """The change of Kafka record ``raw``, or why it cannot be projected.

        ``raw`` has the attributes of a kafka-python ``ConsumerRecord``
        (``key``, ``value``, ``partition``, ``offset``). A returned string is
        the dead-letter reason.
        """
        value = raw.value
        if value is not None and len(value) > self.max_event_bytes:
            # No chatlog producer writes these; one that slipped in (another
            # client, a raised broker limit) must not bloat the read model.
            return (
                f"over-size: {len(value)} bytes, over the limit of {self.max_event_bytes} "
                "(CHATLOG_MAX_EVENT_BYTES); raise the limit and re-publish it from the "
                "dead-letter topic if it is wanted"
            )
        fast = self._fast_header
        if value is not None and fast is not None and value[:HEADER_SIZE] == fast:
            try:
                fields = read_change(value, HEADER_SIZE)
            except ChatLogError as exc:
                return f"undecodable: {exc}"
            if fields is not None:
                if raw.key != fields[0].encode():
                    return _wrong_key(raw.key, fields[0])
                return _new_change(Change, (raw.partition, raw.offset, *fields))
        try:
            event = self.codec.decode(value)
        except ChatLogError as exc:
            return f"undecodable: {exc}"
        if raw.key != event.session_id.encode():
            return _wrong_key(raw.key, event.session_id)
        try:
            return change_of(raw.partition, raw.offset, event)
        except ChatLogError as exc:
            return str(exc)


# NamedTuple's generated __new__ is Python code; this is the C constructor it calls.
_new_change = tuple.__new__


def _wrong_key(key: bytes | None, session_id: str) -> str:
    text = key.decode("utf-8", "replace") if key is not None else None
    return f"key {text!r} is not the session id {session_id!r}"
