r"""What a message may hold: the input rules checked before anything is published.

A message is stored loss-free, as Avro strings (UTF-8) and, for its free-form
parts (``additional_kwargs``, ``response_metadata``, tool call args, content
parts, ``artifact``, usage details), strict JSON. Every value is checked here
first, so a message that cannot be stored fails with a typed error naming the
field, and nothing of its call is published:

- text (every string, dict keys included) must be valid Unicode: a lone
  surrogate (``"\ud800"``, what a bad UTF-16 decode leaves behind) cannot be
  encoded as UTF-8 → :class:`~chatlog.errors.InvalidMessageError`;
- structures nest at most :data:`MAX_NESTING` levels deep →
  :class:`~chatlog.errors.InvalidMessageError` beyond;
- only JSON types: ``dict`` with ``str`` keys, ``list`` (a ``tuple`` is
  stored as a list and reads back as one), ``str``, ``int``, finite
  ``float``, ``bool``, ``None``. Anything else (sets, bytes, datetimes,
  objects, a reference cycle, non-string keys, ``NaN`` or ``±Infinity``)
  → :class:`~chatlog.errors.MessageSerializationError`.

``NaN`` and ``Infinity`` are refused rather than written as the non-standard
tokens Python's ``json`` emits by default: other readers of the log and of
exports (JavaScript, Java, ``jq``) reject those tokens, and ``NaN`` never
compares equal to itself, so a history holding it could not be checked
against its log.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chatlog.errors import InvalidMessageError, MessageSerializationError

#: Deepest nesting of dicts and lists a free-form field may have (the field itself is level 1).
MAX_NESTING = 100

_JSON_TYPES = "dict with string keys, list, str, int, finite float, bool, None"


def checked_text(value: str, what: str) -> str:
    """``value``, refused when it holds a lone surrogate (it cannot be encoded as UTF-8).

    Raises:
        InvalidMessageError: ``value`` holds a lone surrogate.
    """
    # isascii() is O(1) in CPython (the string's kind is known); the UTF-8
    # encode of other text is C-speed, several times cheaper than a regex scan.
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(
            f"{what} holds a lone surrogate (U+{ord(value[exc.start]):04X} at index "
            f"{exc.start}), which is not valid Unicode and cannot be stored; decode the "
            "text correctly, or replace it (text.encode('utf-8', 'replace').decode())"
        ) from exc
    return value


#: What ``json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))``
#: uses, made once: ``json.dumps`` builds a new encoder per call for any non-default option.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def to_json(value: Any, what: str) -> str:
    """``value`` as compact strict JSON, after checking it against the input rules.

    Raises:
        InvalidMessageError: a string holds a lone surrogate, or the structure
            nests deeper than :data:`MAX_NESTING`.
        MessageSerializationError: a value is not a JSON type, is ``NaN`` or
            infinite, or is part of a reference cycle.
    """
    if value == {} and type(value) is dict:
        # Most messages' additional_kwargs and response_metadata: no walk, no encoder.
        return "{}"
    _check(value, what, 0, set())
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:  # e.g. an int over Python's digit limit
        raise MessageSerializationError(
            f"{what} cannot be stored as JSON ({exc}); keep it to JSON types ({_JSON_TYPES})"
        ) from exc


def _check(value: Any, what: str, depth: int, open_containers: set[int]) -> None:
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, str):
        checked_text(value, what)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MessageSerializationError(
                f"{what} holds {value!r}, which strict JSON cannot carry; store it as None "
                "or as a string"
            )
        return
    if not isinstance(value, (dict, list, tuple)):
        raise MessageSerializationError(
            f"{what} holds a {type(value).__name__}, which cannot be stored as JSON; keep it "
            f"to JSON types ({_JSON_TYPES})"
        )
    if depth >= MAX_NESTING:
        raise InvalidMessageError(
            f"{what} nests deeper than {MAX_NESTING} levels, the limit for stored messages; "
            "flatten it, or store it as a JSON string"
        )
    if id(value) in open_containers:
        raise MessageSerializationError(
            f"{what} contains itself (a reference cycle), which JSON cannot carry; "
            "pass a tree of values"
        )
    open_containers.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MessageSerializationError(
                    f"{what} has a {type(key).__name__} key {key!r}; JSON keys are strings, "
                    "so it would read back changed: use string keys"
                )
            checked_text(key, what)
            _check(item, what, depth + 1, open_containers)
    else:
        for item in value:
            _check(item, what, depth + 1, open_containers)
    open_containers.discard(id(value))
