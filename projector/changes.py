"""Changes: what one record of the event log does to the read model.

The projection needs five things from an event (its session, its writer, its
time, what it does and the text it stores), not the event itself. A
:class:`Change` carries exactly those, with the record's coordinates in the
log; its operation codes are those of :mod:`chatlog.projector.protocol`.
A record that cannot be projected is a :class:`Refusal` instead, whose
:class:`RefusalReason` says why (the worker dead-letters it).
:class:`~chatlog.projector.change_reader.ChangeReader` makes both from Kafka
records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import NamedTuple

from chatlog.errors import ReadModelError
from chatlog.projector.protocol import (
    EVENT_TYPES,
    OP_APPEND,
    OP_APPEND_IF,
    OP_CLEAR,
    OP_DELETE_SESSION,
    OP_DELETE_USER,
    OP_SET_TTL,
    OP_SHREDDED,
    pack_fields,
)
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    MessagesAppended,
    MessagesSealed,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    UserDeleted,
)
from chatlog.schemas.stored import stored_message
from chatlog.ttl import MAX_TTL_MS

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
            ``U`` delete user, ``G`` conditional append, ``N`` shredded (the
            keys of :data:`EVENT_TYPES`).
        arg: The stored message JSON (``A``), the TTL in milliseconds or
            ``b""`` for the default (``T``), the packed expected version and
            (id, stored message) pairs (``G``, :func:`conditional_arg`), else ``b""``.
        key: The appended message's id (``A``), ``""`` when it has none.
    """

    partition: int
    offset: int
    session_id: str
    user_id: str
    event_ms: int
    op: str
    arg: bytes
    key: str = ""

    @property
    def event_type(self) -> str:
        """The name of the event record (``MessageAppended``, ...)."""
        return EVENT_TYPES[self.op]


class RefusalReason(Enum):
    """Why a record of the event log is not applied (the dead-letter categories)."""

    #: Larger than ``CHATLOG_MAX_EVENT_BYTES``.
    OVERSIZE = "over-size"
    #: Its stored JSON would be larger than ``CHATLOG_MAX_EVENT_BYTES`` (the
    #: record itself is not: a forged producer's many tiny tool calls).
    STORED_OVERSIZE = "stored-over-size"
    #: Not a chatlog event of any known schema version.
    UNDECODABLE = "undecodable"
    #: Its key is not its session id (it would sit on the wrong partition).
    WRONG_KEY = "wrong-key"
    #: A valid event the projection has no rule for, or one it cannot store.
    UNPROJECTABLE = "unprojectable"
    #: Its writer is not the session's owner.
    OWNERSHIP = "ownership"
    #: The session is tracked on another partition.
    PARTITION = "partition"
    #: Redis refused the session's update (a key of the wrong type, ...).
    SESSION_FAILED = "session-failed"
    #: A sealed message that does not open under its data key: altered, or its
    #: ciphertext spliced from another event or session.
    UNDECRYPTABLE = "undecryptable"
    #: A sealed message whose data key the key store never held (a lost or
    #: foreign key store); re-publish it from the dead-letter topic once restored.
    KEY_MISSING = "key-missing"
    #: A sealed message whose subject was erased (its data key destroyed).
    #: Never dead-lettered, and no longer a refusal: the change reader makes
    #: such an event a :func:`shredded_change`, which only moves its session's
    #: position. Kept for callers that name it.
    SHREDDED = "shredded"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record that is not applied: the reason, and the text for the dead-letter topic.

    ``str(refusal)`` is that text (the ``dlq-reason`` header).
    """

    reason: RefusalReason
    message: str

    def __str__(self) -> str:
        return self.message


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
    key = ""
    if isinstance(payload, MessageAppended):
        op, arg = OP_APPEND, stored_message(payload).encode("utf-8")
        key = payload.id or ""
    elif isinstance(payload, MessagesAppended):
        op, arg = OP_APPEND_IF, conditional_arg(payload)
    elif isinstance(payload, SessionCleared):
        op, arg = OP_CLEAR, b""
    elif isinstance(payload, SessionDeleted):
        op, arg = OP_DELETE_SESSION, b""
    elif isinstance(payload, SessionTtlSet):
        ttl = payload.ttl_ms
        op, arg = OP_SET_TTL, b"" if ttl is None else ttl_arg(ttl)
    elif isinstance(payload, UserDeleted):
        if not event.user_id:
            raise ReadModelError("UserDeleted without a user id")
        op, arg = OP_DELETE_USER, b""
    else:
        raise ReadModelError(f"no projection for event type {event.event_type}")
    return Change(
        partition, offset, event.session_id, event.user_id or "", event_ms(event), op, arg, key
    )


def shredded_change(partition: int, offset: int, event: ChatEvent) -> Change:
    """The change of a sealed ``event`` whose data key was destroyed (its subject was erased).

    It holds nothing of the event but its coordinates, session, writer and
    time (:data:`OP_SHREDDED`): the projection only moves the session's
    tracking position past it, so a writer waiting to read its own write is
    not left waiting, and a replay decides the same. ``arg`` is
    :data:`OP_APPEND_IF` for a conditional append, whose writer waits for a
    verdict (``VERDICT_SHREDDED``), else ``b""``.
    """
    arg = OP_APPEND_IF.encode() if isinstance(event.payload, MessagesSealed) else b""
    return Change(
        partition, offset, event.session_id, event.user_id or "", event_ms(event), OP_SHREDDED, arg
    )


def ttl_arg(ttl_ms: int) -> bytes:
    """A ``SessionTtlSet``'s TTL as the projection applies it: clamped to ``0..MAX_TTL_MS``.

    The API refuses TTLs outside that range; a record from another writer is
    clamped, deterministically, so it can always be applied.
    """
    return str(min(max(ttl_ms, 0), MAX_TTL_MS)).encode()


def conditional_arg(payload: MessagesAppended) -> bytes:
    """A conditional append's script argument: the expected version, then (id, message) pairs."""
    fields = [str(payload.expected_version).encode()]
    for message in payload.messages:
        fields += (message.id.encode() if message.id else b"", stored_message(message).encode())
    return pack_fields(fields)


def conditional_fields(arg: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    """What :func:`conditional_arg` packed: the expected version and the (id, message) pairs."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(arg):
        colon = arg.index(b":", pos)
        size = int(arg[pos:colon])
        fields.append(arg[colon + 1 : colon + 1 + size])
        pos = colon + 1 + size
    pairs = [(fields[k].decode(), fields[k + 1]) for k in range(1, len(fields), 2)]
    return int(fields[0]), pairs
