"""Conversion between LangChain messages and :class:`MessageAppended` events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    messages_from_dict,
)

from chatlog.errors import InvalidMessageError, MessageSerializationError
from chatlog.schemas.events import InvalidToolCall, MessageAppended, ToolCall, UsageMetadata
from chatlog.schemas.stored import AI_TYPES, CHAT_TYPES, MESSAGE_TYPES, TOOL_TYPES, mapped_keys

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MessageSerializationError(
            f"{what} cannot be stored as JSON ({exc}); keep it to JSON types "
            "(dict, list, str, int, float, bool, None)"
        ) from exc


def _opt_str(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidMessageError(f"{what} must be a string or None, got {type(value).__name__}")


def to_event(message: object) -> MessageAppended:
    """Turn a LangChain message into the event that appends it, loss-free.

    Raises:
        InvalidMessageError: ``message`` is not a supported ``BaseMessage`` or has
            content of the wrong type.
        MessageSerializationError: a free-form field is not JSON-serializable.
    """
    if not isinstance(message, BaseMessage):
        raise InvalidMessageError(
            f"expected a langchain_core BaseMessage, got {type(message).__name__}"
        )
    kind = message.type
    if kind not in MESSAGE_TYPES:
        raise InvalidMessageError(
            f"message type {kind!r} cannot be kept in a history; "
            f"use one of {sorted(MESSAGE_TYPES)}"
        )
    data = message.model_dump()
    raw_content = data["content"]
    content: str | tuple[str, ...]
    if isinstance(raw_content, str):
        content = raw_content
    elif isinstance(raw_content, list):
        for part in raw_content:
            if not isinstance(part, (str, dict)):
                raise InvalidMessageError(
                    f"content parts must be strings or dicts, got {type(part).__name__}"
                )
        content = tuple(_json(part, "a content part") for part in raw_content)
    else:
        raise InvalidMessageError(
            f"content must be a string or a list, got {type(raw_content).__name__}"
        )
    fields: dict[str, Any] = {
        "type": kind,
        "content": content,
        "name": _opt_str(data.get("name"), "name"),
        "id": _opt_str(data.get("id"), "id"),
        "additional_kwargs": _json(data.get("additional_kwargs") or {}, "additional_kwargs"),
        "response_metadata": _json(data.get("response_metadata") or {}, "response_metadata"),
    }
    if kind in AI_TYPES:
        fields["tool_calls"] = tuple(
            ToolCall(name=c["name"], args=_json(c["args"], "tool call args"), id=c.get("id"))
            for c in data.get("tool_calls") or ()
        )
        fields["invalid_tool_calls"] = tuple(
            InvalidToolCall(
                name=c.get("name"), args=c.get("args"), id=c.get("id"), error=c.get("error")
            )
            for c in data.get("invalid_tool_calls") or ()
        )
        usage = data.get("usage_metadata")
        if usage is not None:
            details = {k: v for k, v in usage.items() if k not in _USAGE_KEYS}
            fields["usage_metadata"] = UsageMetadata(
                input_tokens=int(usage["input_tokens"]),
                output_tokens=int(usage["output_tokens"]),
                total_tokens=int(usage["total_tokens"]),
                details=_json(details, "usage_metadata") if details else None,
            )
    elif kind in TOOL_TYPES:
        fields["tool_call_id"] = _opt_str(data.get("tool_call_id"), "tool_call_id")
        artifact = data.get("artifact")
        fields["artifact"] = None if artifact is None else _json(artifact, "artifact")
        fields["status"] = _opt_str(data.get("status"), "status")
    elif kind in CHAT_TYPES:
        fields["role"] = _opt_str(data.get("role"), "role")
    extra = {k: v for k, v in data.items() if k not in mapped_keys(kind)}
    if extra:
        fields["extra"] = _json(extra, "message fields")
    return MessageAppended(**fields)


#: Every message class ``messages_from_dict`` builds, by its ``type``.
_CLASSES: dict[str, type[BaseMessage]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        HumanMessage, AIMessage, SystemMessage, ChatMessage, FunctionMessage, ToolMessage,
        AIMessageChunk, HumanMessageChunk, SystemMessageChunk, ChatMessageChunk,
        FunctionMessageChunk, ToolMessageChunk,
    )
}


def _message(item: dict[str, Any]) -> BaseMessage:
    cls = _CLASSES[item["type"]]
    message = cls.__new__(cls)
    # What BaseModel.__init__ does, without the three pass-through __init__
    # frames of LangChain's message classes (content_blocks, their only
    # logic, is never part of the stored form): about 15% of a session read.
    cls.__pydantic_validator__.validate_python(item["data"], self_instance=message)
    return message


def from_stored(raw: Sequence[bytes | str]) -> list[BaseMessage]:
    """Rebuild messages from their stored JSON text (the read model's list items).

    The same classes, validators and result as ``messages_from_dict``; anything
    the fast path refuses takes ``messages_from_dict`` itself, so errors are
    unchanged too.
    """
    try:
        # One parse of the joined items costs less than half of one per item.
        items = json.loads(b"[" + b",".join(raw) + b"]")  # type: ignore[arg-type]
        if len(items) != len(raw):
            raise ValueError("an item is not one JSON value")
        return [_message(item) for item in items]
    except (KeyError, TypeError, ValueError):
        return messages_from_dict([json.loads(item) for item in raw])
