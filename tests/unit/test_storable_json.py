"""``to_json`` writes exactly what ``json.dumps`` with the stored-form options writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.histories.storable import to_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(exclude_categories=("Cs",))), inner,
                      max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_to_json_is_compact_strict_json_dumps(value: Any) -> None:
    """The shared encoder and the empty-object shortcut change no byte of the stored form."""
    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert to_json(value, "value") == expected


def test_empty_object_is_the_usual_metadata() -> None:
    """Most messages' additional_kwargs and response_metadata."""
    assert to_json({}, "additional_kwargs") == "{}"
