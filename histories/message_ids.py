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
from uuid import uuid4

from langchain_core.messages import BaseMessage


def assign_message_ids(messages: Sequence[object]) -> tuple[str, ...]:
    """Set a uuid4 ``id`` on every message of ``messages`` that has none; return all ids.

    Items that are not messages are left alone (the encoder refuses them with
    a typed error); their id is ``""``.
    """
    ids = []
    for message in messages:
        if isinstance(message, BaseMessage):
            if not message.id:
                message.id = str(uuid4())
            ids.append(message.id)
        else:
            ids.append("")
    return tuple(ids)
