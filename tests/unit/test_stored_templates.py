"""The plain-message shortcut of stored_message renders exactly what the full renderer does."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from chatlog.schemas.events import MessageAppended
from chatlog.schemas.stored import MESSAGE_TYPES, render_message, stored_message


@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.text())
def test_plain_messages_render_the_same_through_the_template(kind: str, content: str) -> None:
    """Every message type, any text: byte-identical JSON, and valid JSON of that content."""
    event = MessageAppended(kind, content)
    text = stored_message(event)
    assert text == render_message(event)
    assert json.loads(text)["data"]["content"] == content


def test_a_message_with_any_other_field_set_is_rendered_in_full() -> None:
    """An id, a name or extra keys leave the shortcut: they appear in the stored JSON."""
    event = MessageAppended("human", "hi", id="m1", name="ann", extra='{"x":1}')
    data = json.loads(stored_message(event))["data"]
    assert (data["id"], data["name"], data["x"]) == ("m1", "ann", 1)
