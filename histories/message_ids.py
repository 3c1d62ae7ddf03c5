"""Message ids: what makes an append idempotent.

The projector appends a message whose id the session already holds only once
(the first content wins), so every message must carry an id before it is
published. :func:`assign_message_ids` gives each message without one a fresh
uuid4 (never derived from content: two equal messages are two messages) *on
the caller's object*, as LangGraph's ``add_messages`` does, so that re-sending
the same objects after a ``PublishError`` or a timeout sends the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from chatlog.uuids import uuid4_strings


def assign_message_ids(messages: Sequence[object]) -> tuple[str, ...]:
    """Set a uuid4 ``id`` on every message of ``messages`` that has none; return all ids.

    Items that are not messages are left alone (the encoder refuses them with
    a typed error); their id is ``""``.
    """
    missing = [m for m in messages if isinstance(m, BaseMessage) and not m.id]
    # One batch of random bytes for the whole call (see chatlog.uuids).
    for message, new_id in zip(missing, uuid4_strings(len(missing)), strict=True):
        message.id = new_id
    return tuple((m.id or "") if isinstance(m, BaseMessage) else "" for m in messages)
