"""The Avro codec and the message conversion keep every LangChain message loss-free."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from chatlog.errors import EventDecodeError
from chatlog.histories.messages import from_stored, to_event
from chatlog.schemas import ChatEvent, EventCodec, SessionCleared, stored_message
from chatlog.schemas.codec import MAGIC, SchemaRegistry

codec = EventCodec()


def round_trip(message: BaseMessage) -> BaseMessage:
    event = ChatEvent("session", to_event(message), user_id="u")
    decoded = codec.decode(codec.encode(event))
    assert decoded == event
    return from_stored([stored_message(decoded.payload)])[0]


EXAMPLES = [
    HumanMessage("hi", id="m1", name="ann", additional_kwargs={"k": [1, 2.5, None]}),
    HumanMessage(
        content=[
            "plain part",
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    ),
    AIMessage(
        "calling",
        tool_calls=[{"name": "search", "args": {"q": "kafka", "n": 3}, "id": "call-1"}],
        invalid_tool_calls=[
            {
                "name": "bad",
                "args": "{oops",
                "id": "call-2",
                "error": "bad json",
                "type": "invalid_tool_call",
            }
        ],
        usage_metadata={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 2},
        },
        response_metadata={"model_name": "m", "finish_reason": "stop"},
    ),
    SystemMessage("be brief"),
    ToolMessage("42", tool_call_id="call-1", artifact={"rows": [1, 2]}, status="error"),
    ToolMessage("no artifact", tool_call_id="call-3"),
    ChatMessage("critique", role="critic"),
    FunctionMessage("result", name="fn"),
    AIMessageChunk("partial", tool_call_chunks=[{"name": "f", "args": "{", "id": "c", "index": 0}]),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_class_round_trips_loss_free(message: BaseMessage) -> None:
    """Each langchain_core message class comes back equal, with the same class."""
    back = round_trip(message)
    assert type(back) is type(message)
    assert back == message
    assert back.model_dump() == message.model_dump()


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_object = st.dictionaries(st.text(max_size=8), json_value, max_size=4)
content = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(
            st.text(max_size=30),
            st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)}),
        ),
        max_size=4,
    ),
)
optional_text = st.one_of(st.none(), st.text(min_size=1, max_size=20))


@st.composite
def messages(draw: st.DrawFn) -> BaseMessage:
    common = {
        "content": draw(content),
        "additional_kwargs": draw(json_object),
        "response_metadata": draw(json_object),
        "id": draw(optional_text),
        "name": draw(optional_text),
    }
    kind = draw(st.sampled_from(["human", "ai", "system", "tool", "chat", "function"]))
    if kind == "human":
        return HumanMessage(**common)
    if kind == "system":
        return SystemMessage(**common)
    if kind == "chat":
        return ChatMessage(role=draw(st.text(min_size=1, max_size=10)), **common)
    if kind == "function":
        common["name"] = draw(st.text(min_size=1, max_size=10))
        return FunctionMessage(**common)
    if kind == "tool":
        return ToolMessage(
            tool_call_id=draw(st.text(max_size=10)),
            artifact=draw(json_value),
            status=draw(st.sampled_from(["success", "error"])),
            **common,
        )
    calls = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": st.text(min_size=1, max_size=10), "args": json_object, "id": optional_text}
            ),
            max_size=3,
        )
    )
    usage = draw(
        st.one_of(
            st.none(),
            st.builds(
                lambda i, o: {"input_tokens": i, "output_tokens": o, "total_tokens": i + o},
                st.integers(0, 10**6),
                st.integers(0, 10**6),
            ),
        )
    )
    return AIMessage(tool_calls=calls, usage_metadata=usage, **common)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_round_trip_property(message: BaseMessage) -> None:
    """Any generated message survives encode → decode → stored form → message."""
    back = round_trip(message)
    assert type(back) is type(message)
    assert back.model_dump() == message.model_dump()


def test_session_cleared_round_trips() -> None:
    """SessionCleared and the envelope fields survive a round trip."""
    event = ChatEvent(
        "s",
        SessionCleared(),
        user_id=None,
        source="app",
        event_id=str(uuid.uuid4()),
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
    )
    assert codec.decode(codec.encode(event)) == event


def test_encoding_is_single_object_with_little_endian_fingerprint() -> None:
    """The wire format starts with C3 01 and the registry's fingerprint of the writer schema."""
    data = codec.encode(ChatEvent("s", SessionCleared()))
    assert data[:2] == MAGIC
    assert data[2:10] == SchemaRegistry().latest.fingerprint


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"not avro at all", MAGIC + b"\x00" * 8 + b"body", b"\x80\x04\x95pickle"],
)
def test_undecodable_bytes_raise_event_decode_error(data: bytes) -> None:
    """Garbage, truncated headers, unknown fingerprints and pickles raise EventDecodeError."""
    with pytest.raises(EventDecodeError):
        codec.decode(data)


def test_truncated_body_raises_event_decode_error() -> None:
    """Every strict prefix of a valid event is refused."""
    data = codec.encode(ChatEvent("session", to_event(EXAMPLES[2])))
    for cut in range(len(data)):
        with pytest.raises(EventDecodeError):
            codec.decode(data[:cut])


def test_stored_form_is_langchain_message_to_dict_json() -> None:
    """The read model stores exactly LangChain's message_to_dict JSON."""
    from langchain_core.messages import message_to_dict

    for message in EXAMPLES:
        stored = json.loads(stored_message(to_event(message)))
        assert stored == json.loads(json.dumps(message_to_dict(message)))
