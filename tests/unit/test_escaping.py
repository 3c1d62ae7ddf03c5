"""The shell's one escaping helper: control characters visible, rich markup inert."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from chatlog.cli.escaping import escape_markup, visible


def test_visible_writes_every_control_character_as_an_escape() -> None:
    """C0, DEL, C1, line separators and bidi overrides become escapes; text stays as it is."""
    assert visible("a\nb\rc\td\x00e\x1b[1m\x7f\x9b\u2028\u202e") == (
        "a\\nb\\rc\\td\\x00e\\x1b[1m\\x7f\\x9b\\u2028\\u202e"
    )
    assert visible("café [x] \\ 日本") == "café [x] \\ 日本"


def test_visible_multiline_keeps_newlines_and_tabs_but_not_carriage_returns() -> None:
    """Multi-line content keeps its lines; a CR that would overwrite one is escaped."""
    assert visible("one\n\ttwo\rthree\x1b", multiline=True) == "one\n\ttwo\\rthree\\x1b"


def test_escaped_markup_renders_as_the_literal_text() -> None:
    """Markup-looking user strings print exactly as written, with no style or link."""
    console = Console(width=200, force_terminal=False, record=True)
    for hostile in ("x-[/]", "[link=https://evil.example]x", "[bold red]y[/]", "trailing\\"):
        console.print(f"[bold]{escape_markup(hostile)}[/]")
        rendered = console.export_text()
        assert rendered == f"{hostile}\n"
        assert Text.from_markup(escape_markup(hostile)).spans == []
