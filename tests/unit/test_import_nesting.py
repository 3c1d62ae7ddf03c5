"""Import input nested deeper than the bound is refused with a typed error, not RecursionError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatlog.errors import ChatLogError, ImportFormatError
from chatlog.histories import importers
from chatlog.histories.import_bounds import MAX_IMPORT_NESTING, nesting_depth
from chatlog.histories.importers import read_export


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_import_file_raises_import_format_error(tmp_path: Path) -> None:
    """The proof: 100 000 nested lists raised RecursionError; now a ChatLogError names the limit."""
    path = tmp_path / "deep.json"
    path.write_text(_nested(100_000))
    with pytest.raises(ImportFormatError) as caught:
        read_export(path, session_id="s")
    assert isinstance(caught.value, ChatLogError)
    assert str(MAX_IMPORT_NESTING) in str(caught.value)


def test_deep_nesting_inside_a_message_is_refused_in_json_lines_too() -> None:
    """A session line whose additional_kwargs nest past the bound is refused before parsing."""
    message = {"type": "ai", "data": {"content": "x", "additional_kwargs": {"k": "@"}}}
    line = json.dumps({"session_id": "s", "user_id": "u", "messages": [message]})
    deep = line.replace('"@"', _nested(MAX_IMPORT_NESTING))
    with pytest.raises(ImportFormatError):
        read_export((line + "\n" + deep + "\n").encode())


def test_nesting_at_the_bound_is_accepted_and_brackets_in_strings_do_not_count() -> None:
    """A message using the nesting a real export needs is read; '[' inside text is not nesting."""
    message = {"type": "human", "data": {"content": "[[[[" * 200, "additional_kwargs": {}}}
    read = read_export(json.dumps([message]).encode(), session_id="s")
    assert read[0].messages[0].content == "[[[[" * 200
    assert nesting_depth('{"a": "[[[\\"[[", "b": [[1]]}') == 3
    assert nesting_depth(_nested(MAX_IMPORT_NESTING)) == MAX_IMPORT_NESTING


def test_import_format_error_lives_in_chatlog_errors_and_importers_re_exports_it() -> None:
    """The error class moved to chatlog.errors; the old import path is the same class."""
    assert importers.ImportFormatError is ImportFormatError
