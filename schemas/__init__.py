"""Chat log events and their Avro codec (installed as ``chatlog.schemas``)."""

from __future__ import annotations

from chatlog.schemas.codec import CONTENT_TYPE, EventCodec, SchemaRegistry
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
from chatlog.schemas.stored import stored_message

__all__ = [
    "CONTENT_TYPE",
    "ChatEvent",
    "EventCodec",
    "InvalidToolCall",
    "MessageAppended",
    "Payload",
    "SchemaRegistry",
    "SessionCleared",
    "SessionDeleted",
    "SessionTtlSet",
    "ToolCall",
    "UsageMetadata",
    "UserDeleted",
    "stored_message",
]
