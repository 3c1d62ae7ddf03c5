"""The size limit, held for both forms of an event: its encoded bytes and its stored JSON.

``CHATLOG_MAX_EVENT_BYTES`` bounds what one event costs everywhere it goes.
The Avro record is compact, but the read model stores the message as
LangChain's ``message_to_dict`` JSON, which can be far larger: every empty
tool call takes 5 bytes of Avro and about 50 of JSON, so a 1 MB event with
200k tool calls is 10 MB in Redis. The producer checks both forms before it
publishes (this module); the projector refuses a record whose stored form is
over the limit all the same (a producer that is not chatlog's), see
:class:`~chatlog.projector.change_reader.ChangeReader`.
"""

from __future__ import annotations

from chatlog.errors import EventDecodeError, MessageTooLargeError
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.schemas.stored import stored_message


def check_event_size(event: ChatEvent, value: bytes, limit: int) -> None:
    """Refuse ``event`` (encoded as ``value``) when either of its forms is over ``limit`` bytes.

    Raises:
        MessageTooLargeError: the encoded event, or the JSON the read model
            would store for its message, is larger than ``limit``.
    """
    if len(value) > limit:
        raise MessageTooLargeError(
            f"event for session {event.session_id!r} is {len(value)} bytes, over the "
            f"limit of {limit} (CHATLOG_MAX_EVENT_BYTES)"
        )
    payload = event.payload
    if not isinstance(payload, MessageAppended):
        return
    try:
        stored = len(stored_message(payload).encode("utf-8"))
    except EventDecodeError:
        return  # not storable at all: the projector refuses it, as before
    if stored > limit:
        raise MessageTooLargeError(
            f"message for session {event.session_id!r} is stored as {stored} bytes of JSON "
            f"({len(value)} bytes encoded), over the limit of {limit} "
            "(CHATLOG_MAX_EVENT_BYTES); split it (fewer tool calls, shorter content) or "
            "raise the limit"
        )
