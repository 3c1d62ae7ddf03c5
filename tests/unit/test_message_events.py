"""The write path's shortcuts agree with the general path they skip.

``to_event`` takes a shortcut for plain text messages, ``check_event_size``
skips rendering the stored JSON of a message whose encoded size already
bounds it, and ``new_events`` builds a write's events in one batch. Each is
checked here against what it stands for, on the hostile messages of
``test_message_input_fuzz``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import event, example, given
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessageChunk,
    HumanMessage,
    ToolMessage,
)

from chatlog.errors import ChatLogError, MessageTooLargeError
from chatlog.histories.messages import _event, to_event
from chatlog.producers.producer import encode_event
from chatlog.producers.size_limit import STORED_OVERHEAD, stored_size_bound
from chatlog.schemas.codec import EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended, new_events
from chatlog.schemas.stored import stored_message
from tests.unit.test_message_input_fuzz import FUZZ, messages

codec = EventCodec()

#: Every string field of a message filled with the byte JSON escapes widest.
WORST = "\x01" * 50


def _general(message: BaseMessage) -> MessageAppended | ChatLogError:
    try:
        return _event(message.type, message.model_dump())
    except ChatLogError as exc:
        return exc


@FUZZ
@given(messages)
@example(HumanMessage("plain", id="m-1", name="n"))
@example(AIMessage("plain", id="m-2"))
@example(AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "1"}]))
def test_the_plain_message_shortcut_gives_the_general_event(message: BaseMessage) -> None:
    """``to_event`` equals the field-by-field conversion, or both refuse with the same error."""
    expected = _general(message)
    try:
        got: MessageAppended | ChatLogError = to_event(message)
    except ChatLogError as exc:
        got = exc
    if isinstance(expected, ChatLogError):
        event("refused")
        assert type(got) is type(expected) and str(got) == str(expected)
    else:
        event("converted")
        assert got == expected


@FUZZ
@given(messages)
@example(FunctionMessageChunk(WORST, name=WORST, id=WORST, additional_kwargs={WORST: WORST}))
@example(ChatMessage(WORST, role=WORST, name=WORST, id=WORST))
@example(ToolMessage(WORST, tool_call_id=WORST, status="error", artifact=[WORST], id=WORST))
def test_the_encoded_size_bounds_the_stored_size(message: BaseMessage) -> None:
    """Wherever the bound applies, the stored JSON is within it."""
    try:
        payload = to_event(message)
        value = codec.encode(ChatEvent("s", payload))
    except ChatLogError:
        return
    try:
        stored = len(stored_message(payload).encode())
    except ChatLogError:
        return  # not storable: the projector refuses it, the bound does not matter
    bound = stored_size_bound(payload, len(value))
    event("bounded" if bound < 2**62 else "unbounded")
    assert stored <= bound


def test_the_bound_holds_for_the_widest_escapes_of_every_plain_field() -> None:
    """Control characters in every text field: six bytes of JSON each, still under the bound."""
    payload = MessageAppended(
        "FunctionMessageChunk", WORST, name=WORST, id=WORST, role=WORST, tool_call_id=WORST,
        status=WORST, additional_kwargs="{}", response_metadata="{}",
    )
    value = codec.encode(ChatEvent("s", payload))
    stored = len(stored_message(payload).encode())
    assert stored <= stored_size_bound(payload, len(value))
    assert stored > 5 * len(WORST) * 3  # the escapes did grow it


def test_a_message_whose_escapes_grow_it_past_the_limit_is_refused() -> None:
    """Encoded under the limit, stored (six bytes per control character) over it: refused."""
    limit = 64 * 1024
    message = HumanMessage("\x01" * (limit // 2), id="m-1")
    with pytest.raises(MessageTooLargeError, match="stored as"):
        encode_event(codec, ChatEvent("s", to_event(message)), limit)


def test_a_message_the_bound_keeps_under_the_limit_is_accepted_unrendered() -> None:
    """A plain message far below the limit is encoded with no stored-size refusal."""
    limit = 64 * 1024
    text = "x" * ((limit - STORED_OVERHEAD) // 6 - 200)
    record = encode_event(codec, ChatEvent("s", to_event(HumanMessage(text, id="m"))), limit)
    assert len(record.value) > len(text)


def test_events_of_one_write_share_their_envelope_and_time_but_not_ids() -> None:
    """Same session, user, source and event time; distinct fresh ids; millisecond time."""
    payloads = [MessageAppended("human", str(n)) for n in range(50)]
    before = datetime.now(timezone.utc)
    events = new_events("s-1", payloads, user_id="u", source="app")
    assert [e.payload for e in events] == payloads
    assert {(e.session_id, e.user_id, e.source) for e in events} == {("s-1", "u", "app")}
    assert len({e.event_id for e in events}) == len(events)
    assert len({e.occurred_at for e in events}) == 1
    occurred = events[0].occurred_at
    assert occurred.microsecond % 1000 == 0
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= occurred
    assert codec.decode(codec.encode(events[0])) == events[0]
