"""The read path's fast decode builds exactly what ``messages_from_dict`` builds."""

from __future__ import annotations

import json

import pytest
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

from chatlog.histories.messages import from_stored, to_event
from chatlog.schemas.stored import stored_message

MESSAGES: list[BaseMessage] = [
    HumanMessage("hi", id="1", name="bob", additional_kwargs={"a": [1, 2.5, None, {"x": "y"}]}),
    HumanMessage([{"type": "text", "text": "a"}, "plain"]),
    AIMessage(
        "ok",
        tool_calls=[{"name": "f", "args": {"q": 1, "big": 12345678901234567890}, "id": "c1"}],
        usage_metadata={
            "input_tokens": 1, "output_tokens": 2, "total_tokens": 3,
            "input_token_details": {"cache_read": 1},
        },
        response_metadata={"model": "m", "temperature": 0.1},
    ),
    AIMessage("", invalid_tool_calls=[
        {"name": "g", "args": "{bad", "id": "c2", "error": "e", "type": "invalid_tool_call"}
    ]),
    SystemMessage("sys"),
    ChatMessage("c", role="critic"),
    FunctionMessage("r", name="fn"),
    ToolMessage("res", tool_call_id="c1", artifact={"k": [1, 2]}, status="error"),
    AIMessageChunk("chunk", tool_calls=[{"name": "f", "args": {}, "id": "c9"}]),
    HumanMessageChunk("h"),
    SystemMessageChunk("s"),
    ChatMessageChunk("c", role="r"),
    FunctionMessageChunk("f", name="n"),
    ToolMessageChunk("t", tool_call_id="x"),
    AIMessage('ünïcødé \u2028 "quotes" \\ back'),
    HumanMessage("x", custom_field="an extra field"),
]


def _stored(messages: list[BaseMessage]) -> list[bytes]:
    return [stored_message(to_event(m)).encode() for m in messages]


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_from_stored_matches_messages_from_dict_for_every_message_class(as_text: bool) -> None:
    """Same classes, fields, extras and set fields as LangChain's own decoder."""
    stored = _stored(MESSAGES)
    items: list[bytes] | list[str] = [s.decode() for s in stored] if as_text else stored
    expected = messages_from_dict([json.loads(s) for s in stored])
    got = from_stored(items)
    assert got == MESSAGES
    for mine, theirs in zip(got, expected, strict=True):
        assert type(mine) is type(theirs)
        assert mine.model_dump() == theirs.model_dump()
        assert mine.model_fields_set == theirs.model_fields_set
        assert mine.__pydantic_extra__ == theirs.__pydantic_extra__


@pytest.mark.parametrize(
    "item",
    [
        b'{"type":"nope","data":{}}',
        b'{"type":"human","data":{"content":"a"}},{"type":"human","data":{"content":"b"}}',
        b"",
    ],
    ids=["unknown-type", "two-values-in-one-item", "empty"],
)
def test_from_stored_raises_what_messages_from_dict_raises(item: bytes) -> None:
    """A broken item fails with LangChain's or json's own error, never a silent mix-up."""
    with pytest.raises(ValueError):
        from_stored([item])
