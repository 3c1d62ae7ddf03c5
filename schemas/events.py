"""Chat log events: immutable records, one per log entry.

These mirror the Avro records in ``schemas/avsc`` field for field. Free-form
LangChain structures (``additional_kwargs``, tool-call ``args``, content
parts, ...) travel as JSON text inside the record; the common fields are real
Avro fields. Nothing here imports LangChain: the projector uses these
classes too, and it never imports LangChain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Union

from chatlog.uuids import uuid4_strings


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call requested by an AI message; ``args`` is a JSON object."""

    name: str
    args: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidToolCall:
    """A tool call the model emitted but that could not be parsed."""

    name: str | None = None
    args: str | None = None
    id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UsageMetadata:
    """Token counts of an AI message; ``details`` is a JSON object of the other keys."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    details: str | None = None


@dataclass(frozen=True, slots=True)
class MessageAppended:
    """One LangChain message appended to a session.

    ``content`` is the plain text, or a tuple of content parts each encoded as
    JSON. ``artifact`` is JSON text, or ``None`` when the message has no
    artifact field. ``extra`` is a JSON object of any message field not
    listed here, so that nothing is lost.
    """

    type: str
    content: str | tuple[str, ...]
    name: str | None = None
    id: str | None = None
    role: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    invalid_tool_calls: tuple[InvalidToolCall, ...] = ()
    usage_metadata: UsageMetadata | None = None
    tool_call_id: str | None = None
    artifact: str | None = None
    status: str | None = None
    additional_kwargs: str = "{}"
    response_metadata: str = "{}"
    extra: str = "{}"


@dataclass(frozen=True, slots=True)
class SessionCleared:
    """Every message of the session before this event is gone."""


@dataclass(frozen=True, slots=True)
class SessionDeleted:
    """The session is gone: messages, meta and owner. A later write starts it afresh."""


#: The ``session_id`` of a :class:`UserDeleted` event: no real session can have
#: an empty id, so the event can never be mistaken for one session's.
USER_EVENT_SESSION_ID = ""


@dataclass(frozen=True, slots=True)
class UserDeleted:
    """The user's session index is gone.

    Published after one :class:`SessionDeleted` per session of the user, which
    are what remove the sessions (also in a replay); its envelope carries the
    user id and :data:`USER_EVENT_SESSION_ID` as session id.
    """


@dataclass(frozen=True, slots=True)
class SessionTtlSet:
    """Overrides the deployment's idle TTL for one session.

    ``ttl_ms`` is the idle time in milliseconds after which the session
    expires, ``0`` for never, ``None`` to go back to the deployment default.
    """

    ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MessagesAppended:
    """Messages appended all or none, if the session holds ``expected_version`` messages.

    One event for the whole conditional call (schema v3), so no other
    writer's record can land between its messages: the projector appends all
    of them when the session holds exactly ``expected_version`` messages as it
    applies the event, else none (a verdict it records, not a dead letter).
    """

    expected_version: int
    messages: tuple[MessageAppended, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageSealed:
    """A :class:`MessageAppended` encrypted under the data key of its subject.

    Written instead of the message when ``CHATLOG_ENCRYPTION_KEY`` is set
    (:mod:`chatlog.schemas.sealing`). ``type`` and ``id`` stay in clear;
    every other field is in ``ciphertext`` (AES-256-GCM, tag appended) under
    the data key ``key_id`` of ``subject`` (the user id, else the session id).
    """

    subject: str
    key_id: str
    type: str
    id: str | None
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class MessagesSealed:
    """A :class:`MessagesAppended` whose messages are sealed (schema v4).

    Written instead of the conditional append when ``CHATLOG_ENCRYPTION_KEY``
    is set (:func:`chatlog.schemas.sealing.seal_message`): ``expected_version``
    stays in clear for the projector's verdict, each message is a
    :class:`MessageSealed` under the data key of the event's subject, its
    associated data also binding the expected version and its place in the event.
    """

    expected_version: int
    messages: tuple[MessageSealed, ...] = ()


#: The payload of a :class:`ChatEvent`: one of the event records.
Payload = Union[  # noqa: UP007 - a runtime alias, kept for 3.10
    MessageAppended,
    SessionCleared,
    SessionDeleted,
    UserDeleted,
    SessionTtlSet,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
]


def _now() -> datetime:
    # Avro timestamp-millis keeps milliseconds only; truncating here keeps an
    # event equal to itself after a round trip through the log.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _event_id() -> str:
    return uuid4_strings(1)[0]


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One entry of the chat log: an envelope around a payload event."""

    session_id: str
    payload: Payload
    user_id: str | None = None
    source: str | None = None
    event_id: str = field(default_factory=_event_id)
    occurred_at: datetime = field(default_factory=_now)

    @property
    def event_type(self) -> str:
        """Name of the payload record (``MessageAppended``, ``SessionCleared``, ...)."""
        return type(self.payload).__name__


def new_events(
    session_id: str,
    payloads: Sequence[Payload],
    *,
    user_id: str | None = None,
    source: str | None = None,
) -> list[ChatEvent]:
    """One :class:`ChatEvent` per payload, in order: the events of one write.

    They share one event time and draw their ids in one batch
    (:func:`~chatlog.uuids.uuid4_strings`), which costs a fraction of making
    each event alone; every id is still a fresh uuid4.
    """
    occurred_at = _now()
    return [
        ChatEvent(session_id, payload, user_id, source, event_id, occurred_at)
        for payload, event_id in zip(payloads, uuid4_strings(len(payloads)), strict=True)
    ]
