r"""User data made safe to print: control characters shown as escapes, rich markup escaped.

Session ids, user ids and message content come from whoever wrote to the
log. Printed as they are, ``\x1b[31m`` would style the terminal, ``\r``
or ``\n`` would overwrite or forge output lines, and rich would read
``[link=https://evil.example]`` as markup (``x-[/]`` even crashes it with a
``MarkupError``). Every command passes user data through :func:`escape_markup`
(for rich), :func:`visible` (for plain output and text log lines) or
:func:`visible_json` (for JSON output).
"""

from __future__ import annotations

import re

from rich.markup import escape

#: C0 and C1 controls, DEL, the line and paragraph separators (``str.splitlines``
#: splits at them, as at NEL ``\x85``) and the bidirectional marks that reorder a
#: line as displayed ("Trojan Source"); none of them prints as itself.
_OTHER_CONTROLS = (
    "\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
)
_ANY_CONTROL = re.compile(f"[\\x00-\\x0a{_OTHER_CONTROLS}]")
#: The same but newline (\x0a) and tab (\x09), for text shown over several lines.
_CONTROL_BUT_LINES = re.compile(f"[\\x00-\\x08{_OTHER_CONTROLS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _written_out(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object, *, multiline: bool = False) -> str:
    r"""``str(value)`` with every control character written as an escape (``\x1b``, ``\n``).

    With ``multiline`` a newline and a tab stay as they are (message content
    shown inside a table cell, which keeps its lines to itself); a carriage
    return is still escaped, since it would overwrite the line.
    """
    pattern = _CONTROL_BUT_LINES if multiline else _ANY_CONTROL
    return pattern.sub(_written_out, str(value))


def escape_markup(value: object, *, multiline: bool = False) -> str:
    """:func:`visible` text with rich markup escaped: safe inside a rich markup string."""
    return escape(visible(value, multiline=multiline))


def visible_json(text: str) -> str:
    r"""JSON ``text`` with the controls ``json.dumps(ensure_ascii=False)`` leaves raw as ``\uXXXX``.

    ``json.dumps`` escapes C0 controls itself but passes C1 controls, line
    separators and bidirectional marks through; written as JSON escapes they
    decode to the same strings and cannot reach the terminal or split a line.
    """
    # Raw newlines (and tabs) in JSON text are only ever ``indent`` layout.
    return _CONTROL_BUT_LINES.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
