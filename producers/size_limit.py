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

import sys

from chatlog.errors import EventDecodeError, MessageTooLargeError
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.schemas.stored import stored_message

#: What the stored JSON of a message without tool calls or usage metadata adds
#: beyond six bytes per byte of its encoded event: its keys, ``null``s and type.
#: JSON escapes a byte of text into at most six (``\u0001``); the JSON fragments
#: an event carries are spliced in verbatim; every other part of the stored form
#: is a fixed key or a message type (20 bytes at most), under 400 bytes in all.
STORED_OVERHEAD = 1024


def check_event_size(event: ChatEvent, value: bytes, limit: int, *, plain: bool = True) -> None:
    """Refuse ``event`` (encoded as ``value``) when either of its forms is over ``limit`` bytes.

    ``plain``: ``value`` is ``event`` itself encoded (not a sealed form of it),
    so its length bounds the stored JSON's (:data:`STORED_OVERHEAD`); a message
    that bound keeps under ``limit`` is not rendered just to be measured.

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
    if plain and stored_size_bound(payload, len(value)) <= limit:
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


def stored_size_bound(payload: MessageAppended, encoded_bytes: int) -> int:
    """An upper bound of the stored JSON's UTF-8 size of ``payload``, encoded in ``encoded_bytes``.

    Only messages without tool calls, invalid tool calls and usage metadata
    have one (each empty tool call alone grows ten-fold); for the others it is
    unbounded (``sys.maxsize``).
    """
    if payload.tool_calls or payload.invalid_tool_calls or payload.usage_metadata is not None:
        return sys.maxsize
    return 6 * encoded_bytes + STORED_OVERHEAD
