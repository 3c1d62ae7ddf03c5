"""The stored form of a message in the read model: LangChain's ``message_to_dict`` JSON.

The projector turns each :class:`MessageAppended` into this JSON text without
importing LangChain, so a reader needs one ``json.loads`` and
``messages_from_dict`` per message and nothing else. The JSON fragments the
event already carries (``additional_kwargs``, tool-call ``args``, content
parts, ...) are validated and spliced in as they are, never re-encoded.
"""

from __future__ import annotations

import json
from typing import Any

from chatlog.errors import EventDecodeError
from chatlog.schemas.events import MessageAppended

#: Message types LangChain's ``messages_from_dict`` can rebuild (``remove`` is
#: an instruction to a graph state reducer, not a message, so it is not stored).
MESSAGE_TYPES = frozenset(
    {
        "human",
        "ai",
        "system",
        "chat",
        "function",
        "tool",
        "AIMessageChunk",
        "HumanMessageChunk",
        "SystemMessageChunk",
        "ChatMessageChunk",
        "FunctionMessageChunk",
        "ToolMessageChunk",
    }
)
AI_TYPES = frozenset({"ai", "AIMessageChunk"})
TOOL_TYPES = frozenset({"tool", "ToolMessageChunk"})
CHAT_TYPES = frozenset({"chat", "ChatMessageChunk"})

#: Keys of ``message_to_dict(m)["data"]`` carried by real Avro fields.
COMMON_KEYS = frozenset({"content", "additional_kwargs", "response_metadata", "type", "name", "id"})
AI_KEYS = frozenset({"tool_calls", "invalid_tool_calls", "usage_metadata"})
TOOL_KEYS = frozenset({"tool_call_id", "artifact", "status"})
CHAT_KEYS = frozenset({"role"})

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def _mapped_keys(message_type: str) -> frozenset[str]:
    if message_type in AI_TYPES:
        return COMMON_KEYS | AI_KEYS
    if message_type in TOOL_TYPES:
        return COMMON_KEYS | TOOL_KEYS
    if message_type in CHAT_TYPES:
        return COMMON_KEYS | CHAT_KEYS
    return COMMON_KEYS


# Made once: every message written and every message projected asks for its set.
_MAPPED_KEYS = {kind: _mapped_keys(kind) for kind in MESSAGE_TYPES}


def mapped_keys(message_type: str) -> frozenset[str]:
    """The data keys that have Avro fields for messages of ``message_type``."""
    keys = _MAPPED_KEYS.get(message_type)
    return keys if keys is not None else _mapped_keys(message_type)


def _json_object(text: str, what: str) -> str:
    if text == "{}":
        return text
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise EventDecodeError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise EventDecodeError(f"{what} is not a JSON object")
    return text


def _json_value(text: str, what: str) -> str:
    try:
        json.loads(text)
    except ValueError as exc:
        raise EventDecodeError(f"{what} is not valid JSON: {exc}") from exc
    return text


def _opt(value: str | None) -> str:
    return "null" if value is None else _dumps(value)


def stored_message(event: MessageAppended) -> str:
    """Render ``event`` as the JSON text of ``message_to_dict`` for that message.

    Raises:
        EventDecodeError: the event is well-formed Avro but its content is not a
            storable message (unknown type, broken JSON fragment, clashing keys).
    """
    # Most messages are plain text with nothing else set: the projector renders
    # every one of them, so they get a template made by render_message itself.
    if (
        type(event.content) is str
        and event.additional_kwargs == "{}"
        and event.response_metadata == "{}"
        and event.extra == "{}"
        and event.name is None
        and event.id is None
        and not event.tool_calls
        and not event.invalid_tool_calls
        and event.usage_metadata is None
    ):
        template = _PLAIN_TEMPLATES.get(event.type)
        if template is not None:
            return template[0] + _dumps(event.content) + template[1]
    return render_message(event)


def render_message(event: MessageAppended) -> str:
    """``event`` rendered field by field, without the plain-message shortcut.

    Raises:
        EventDecodeError: as :func:`stored_message`.
    """
    kind = event.type
    if kind not in MESSAGE_TYPES:
        raise EventDecodeError(f"unknown message type {kind!r}")
    if isinstance(event.content, str):
        content = _dumps(event.content)
    else:
        content = (
            "[" + ",".join(_json_value(p, "content part") for p in event.content) + "]"
        )
    parts = [
        '{"content":',
        content,
        ',"additional_kwargs":',
        _json_object(event.additional_kwargs, "additional_kwargs"),
        ',"response_metadata":',
        _json_object(event.response_metadata, "response_metadata"),
        ',"type":',
        _dumps(kind),
        ',"name":',
        _opt(event.name),
        ',"id":',
        _opt(event.id),
    ]
    if kind in AI_TYPES:
        parts.append(',"tool_calls":[')
        parts.append(
            ",".join(
                '{"name":'
                + _dumps(c.name)
                + ',"args":'
                + _json_object(c.args, "tool call args")
                + ',"id":'
                + _opt(c.id)
                + ',"type":"tool_call"}'
                for c in event.tool_calls
            )
        )
        parts.append('],"invalid_tool_calls":[')
        parts.append(
            ",".join(
                '{"name":'
                + _opt(c.name)
                + ',"args":'
                + _opt(c.args)
                + ',"id":'
                + _opt(c.id)
                + ',"error":'
                + _opt(c.error)
                + ',"type":"invalid_tool_call"}'
                for c in event.invalid_tool_calls
            )
        )
        parts.append('],"usage_metadata":')
        usage = event.usage_metadata
        if usage is None:
            parts.append("null")
        else:
            body: dict[str, Any] = {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
            }
            if usage.details is not None:
                details = json.loads(_json_object(usage.details, "usage details"))
                body.update({k: v for k, v in details.items() if k not in _USAGE_KEYS})
            parts.append(_dumps(body))
    elif kind in TOOL_TYPES:
        parts += [
            ',"tool_call_id":',
            _opt(event.tool_call_id),
            ',"artifact":',
            "null" if event.artifact is None else _json_value(event.artifact, "artifact"),
            ',"status":',
            _opt(event.status),
        ]
    elif kind in CHAT_TYPES:
        parts += [',"role":', _opt(event.role)]
    extra = _json_object(event.extra, "extra")
    if extra != "{}":
        keys = json.loads(extra).keys()
        clash = mapped_keys(kind) & keys
        if clash:
            raise EventDecodeError(f"extra repeats mapped fields {sorted(clash)}")
        if keys:
            parts += [",", extra.strip()[1:-1]]
    parts.append("}")
    return '{"type":' + _dumps(kind) + ',"data":' + "".join(parts) + "}"


def _plain_template(kind: str) -> tuple[str, str]:
    """The rendering of a plain ``kind`` message, split around its (empty) content."""
    text = render_message(MessageAppended(kind, ""))
    marker = '"content":""'
    at = text.index(marker) + len('"content":')
    return text[:at], text[at + 2 :]


#: Message types whose plain messages render as prefix + content JSON + suffix
#: (tool and chat messages carry fields of their own, so they are always rendered).
_PLAIN_TEMPLATES = {
    kind: _plain_template(kind) for kind in MESSAGE_TYPES - TOOL_TYPES - CHAT_TYPES
}

# The bytes _dumps escapes in a string ('"', '\\' and U+0000..U+001F), asked of
# the encoder itself. With ensure_ascii=False it copies every other character
# as it is, so the UTF-8 of any text without these bytes is, between quotes,
# the UTF-8 of its JSON string.
_JSON_ESCAPED = bytes(b for b in range(128) if _dumps(chr(b)) != f'"{chr(b)}"')

#: A :meth:`bytes.translate` table that changes exactly the bytes a JSON string
#: must escape: valid UTF-8 ``text`` needs no escape if and only if
#: ``text.translate(MARK_JSON_ESCAPES) == text``. (A table, not ``delete=``:
#: CPython then runs its faster loop, a third less time on a 500-byte text.)
MARK_JSON_ESCAPES = bytes(0x7F if b in _JSON_ESCAPED else b for b in range(256))

#: The plain templates of :func:`stored_message` as UTF-8, keyed by the UTF-8
#: message type, the quotes around the content included: for the plain message
#: of a type listed here and UTF-8 ``content`` that needs no JSON escape, the
#: stored JSON is ``prefix + content + suffix``.
PLAIN_TEMPLATES_UTF8 = {
    kind.encode(): ((prefix + '"').encode(), ('"' + suffix).encode())
    for kind, (prefix, suffix) in _PLAIN_TEMPLATES.items()
}


def _plain_id_template(kind: str) -> tuple[bytes, bytes, bytes]:
    """The rendering of a plain ``kind`` message with an id, split around content and id."""
    marker = "chatlog-id-marker"
    text = render_message(MessageAppended(kind, "", id=marker))
    at = text.index('"content":""') + len('"content":')
    cut = text.index(marker)
    prefix, middle, suffix = text[: at + 1], text[at + 1 : cut], text[cut + len(marker) :]
    return prefix.encode(), middle.encode(), suffix.encode()


#: Like :data:`PLAIN_TEMPLATES_UTF8` for a plain message that carries an ``id``
#: (every message chatlog writes): for content and id that need no JSON escape
#: the stored JSON is ``prefix + content + middle + id + suffix``.
PLAIN_ID_TEMPLATES_UTF8 = {
    kind.encode(): _plain_id_template(kind) for kind in _PLAIN_TEMPLATES
}


def plain_message_utf8(kind: bytes, content: bytes) -> bytes | None:
    """``stored_message(MessageAppended(kind, content)).encode()``, from the UTF-8 of both.

    For readers that take a plain message (text content, every other field at
    its default) straight from an event's bytes: the stored JSON is built from
    the bytes, decoding and re-encoding only text that needs a JSON escape.

    Returns:
        The stored JSON as UTF-8, or ``None`` when messages of type ``kind``
        have no plain template (tool, chat and unknown types):
        :func:`stored_message` renders those, or refuses them.

    Raises:
        EventDecodeError: ``content`` is not valid UTF-8.
    """
    template = PLAIN_TEMPLATES_UTF8.get(kind)
    if template is None:
        return None
    text: str | None = None
    # isascii() is a word-at-a-time scan: only other text pays for the decode,
    # which is also its UTF-8 check.
    if not content.isascii():
        try:
            text = content.decode()
        except UnicodeDecodeError as exc:
            raise EventDecodeError(f"message content is not valid UTF-8: {exc}") from exc
    # The bytes of multi-byte UTF-8 sequences are all >= 0x80, so this byte
    # test is exact for any valid UTF-8.
    if content.translate(MARK_JSON_ESCAPES) == content:
        return template[0] + content + template[1]
    if text is None:
        text = content.decode()
    return template[0][:-1] + _dumps(text).encode() + template[1][1:]
