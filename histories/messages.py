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

from chatlog.errors import ChatLogError, InvalidMessageError
from chatlog.histories.storable import checked_text, to_json
from chatlog.schemas.events import InvalidToolCall, MessageAppended, ToolCall, UsageMetadata
from chatlog.schemas.stored import AI_TYPES, CHAT_TYPES, MESSAGE_TYPES, TOOL_TYPES, mapped_keys

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def _opt_str(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return checked_text(value, what)
    raise InvalidMessageError(f"{what} must be a string or None, got {type(value).__name__}")


def _str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return checked_text(value, what)
    raise InvalidMessageError(f"{what} must be a string, got {type(value).__name__}")


def _count(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise InvalidMessageError(f"{what} must be a whole number, got {value!r}")


def to_event(message: object) -> MessageAppended:
    """Turn a LangChain message into the event that appends it, loss-free.

    Every value is checked against the input rules of :mod:`chatlog.histories.storable`.

    Raises:
        InvalidMessageError: ``message`` is not a supported ``BaseMessage``, has
            a field of the wrong type or shape, text with a lone surrogate, or
            a structure nested deeper than ``MAX_NESTING``.
        MessageSerializationError: a free-form field is not strict JSON.
    """
    try:
        return _to_event(message)
    except ChatLogError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # A message mutated after construction (pydantic does not validate
        # assignments) can hold shapes its class never allows.
        raise InvalidMessageError(
            f"the message cannot be stored: {type(exc).__name__}: {exc}; build it "
            "through its class so LangChain validates it"
        ) from exc


def _to_event(message: object) -> MessageAppended:
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
    return _plain_event(kind, data) or _event(kind, data)


#: Types whose messages have no fields beyond the common ones and the AI ones.
_PLAIN_TYPES = MESSAGE_TYPES - TOOL_TYPES - CHAT_TYPES


def _plain_event(kind: str, data: dict[str, Any]) -> MessageAppended | None:
    """The event of a plain text message (nothing but text, name and id), else ``None``.

    Most messages written are plain. This is what :func:`_event` returns for
    them, without its walk over every field (``tests/unit/test_message_events.py``
    checks that the two agree).
    """
    content = data["content"]
    if (
        type(content) is not str
        or kind not in _PLAIN_TYPES
        or data.get("additional_kwargs")
        or data.get("response_metadata")
        or not data.keys() <= mapped_keys(kind)
    ):
        return None
    if kind in AI_TYPES and (
        data.get("tool_calls") or data.get("invalid_tool_calls")
        or data.get("usage_metadata") is not None
    ):
        return None
    return MessageAppended(
        kind,
        checked_text(content, "content"),
        name=_opt_str(data.get("name"), "name"),
        id=_opt_str(data.get("id"), "id"),
    )


def _event(kind: str, data: dict[str, Any]) -> MessageAppended:
    """The event of the message of type ``kind`` that ``model_dump`` gave ``data``."""
    raw_content = data["content"]
    content: str | tuple[str, ...]
    if isinstance(raw_content, str):
        content = checked_text(raw_content, "content")
    elif isinstance(raw_content, list):
        for part in raw_content:
            if not isinstance(part, (str, dict)):
                raise InvalidMessageError(
                    f"content parts must be strings or dicts, got {type(part).__name__}"
                )
        content = tuple(to_json(part, "a content part") for part in raw_content)
    else:
        raise InvalidMessageError(
            f"content must be a string or a list, got {type(raw_content).__name__}"
        )
    fields: dict[str, Any] = {
        "type": kind,
        "content": content,
        "name": _opt_str(data.get("name"), "name"),
        "id": _opt_str(data.get("id"), "id"),
        "additional_kwargs": to_json(data.get("additional_kwargs") or {}, "additional_kwargs"),
        "response_metadata": to_json(data.get("response_metadata") or {}, "response_metadata"),
    }
    if kind in AI_TYPES:
        fields["tool_calls"] = tuple(
            ToolCall(
                name=_str(c["name"], "tool call name"),
                args=to_json(c["args"], "tool call args"),
                id=_opt_str(c.get("id"), "tool call id"),
            )
            for c in data.get("tool_calls") or ()
        )
        fields["invalid_tool_calls"] = tuple(
            InvalidToolCall(
                name=_opt_str(c.get("name"), "invalid tool call name"),
                args=_opt_str(c.get("args"), "invalid tool call args"),
                id=_opt_str(c.get("id"), "invalid tool call id"),
                error=_opt_str(c.get("error"), "invalid tool call error"),
            )
            for c in data.get("invalid_tool_calls") or ()
        )
        usage = data.get("usage_metadata")
        if usage is not None:
            details = {k: v for k, v in usage.items() if k not in _USAGE_KEYS}
            fields["usage_metadata"] = UsageMetadata(
                input_tokens=_count(usage["input_tokens"], "usage_metadata input_tokens"),
                output_tokens=_count(usage["output_tokens"], "usage_metadata output_tokens"),
                total_tokens=_count(usage["total_tokens"], "usage_metadata total_tokens"),
                details=to_json(details, "usage_metadata") if details else None,
            )
    elif kind in TOOL_TYPES:
        fields["tool_call_id"] = _opt_str(data.get("tool_call_id"), "tool_call_id")
        artifact = data.get("artifact")
        fields["artifact"] = None if artifact is None else to_json(artifact, "artifact")
        fields["status"] = _opt_str(data.get("status"), "status")
    elif kind in CHAT_TYPES:
        fields["role"] = _opt_str(data.get("role"), "role")
    extra = {k: v for k, v in data.items() if k not in mapped_keys(kind)}
    if extra:
        fields["extra"] = to_json(extra, "message fields")
    return MessageAppended(**fields)


#: Every message class a history stores (those ``messages_from_dict`` builds).
MESSAGE_CLASSES: tuple[type[BaseMessage], ...] = (
    HumanMessage, AIMessage, SystemMessage, ChatMessage, FunctionMessage, ToolMessage,
    AIMessageChunk, HumanMessageChunk, SystemMessageChunk, ChatMessageChunk,
    FunctionMessageChunk, ToolMessageChunk,
)

#: The message classes by their ``type``.
_CLASSES: dict[str, type[BaseMessage]] = {
    cls.model_fields["type"].default: cls for cls in MESSAGE_CLASSES
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
