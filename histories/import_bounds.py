"""Bounds on import input: nesting is measured before any parser recurses into it.

``json.loads`` recurses once per nesting level, so a file of a few thousand
``[`` raises :class:`RecursionError` (not a ``ValueError``) from deep inside
the parser, and LangChain's and chatlog's own encoders would recurse again on
anything just under the interpreter's limit. Import input is therefore
measured first, by a linear scan that recurses into nothing, and refused
with :class:`~chatlog.errors.ImportFormatError` when it is nested deeper than
:data:`MAX_IMPORT_NESTING`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chatlog.errors import ImportFormatError

#: Deepest nesting of arrays and objects an import accepts. A chatlog export
#: uses about ten levels (document, sessions, session, messages, message,
#: data, tool calls, call, args, ...), which leaves ninety for the content.
MAX_IMPORT_NESTING = 100

# A JSON string, unrolled so that a long one costs no backtracking.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str | bytes, *, stop_after: int | None = None) -> int:
    """The deepest nesting of ``[``/``{`` in JSON (or JSON Lines) ``text``, strings ignored.

    Counting stops once the depth passes ``stop_after``. Unbalanced input is
    measured as far as it goes; the parser reports what is wrong with it.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_after is not None and deepest > stop_after:
                    break
        elif depth > 0:
            depth -= 1
    return deepest


def check_nesting(text: str | bytes, what: str) -> None:
    """Refuse ``text`` when it nests deeper than :data:`MAX_IMPORT_NESTING`.

    Raises:
        ImportFormatError: it does.
    """
    if nesting_depth(text, stop_after=MAX_IMPORT_NESTING) > MAX_IMPORT_NESTING:
        raise ImportFormatError(
            f"{what} nests arrays or objects more than {MAX_IMPORT_NESTING} levels deep "
            "(MAX_IMPORT_NESTING); no chat message needs that: flatten the data first"
        )


def loads_bounded(text: str | bytes, what: str) -> Any:
    """``json.loads(text)`` after :func:`check_nesting`.

    Raises:
        ImportFormatError: ``text`` is nested too deeply.
        ValueError: ``text`` is not JSON (as ``json.loads``).
    """
    check_nesting(text, what)
    return json.loads(text)
