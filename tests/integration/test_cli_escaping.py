r"""User data printed by the CLI cannot crash a command, style the terminal or forge output.

Each test reproduces a finding of the adversarial review (issue 17) through
the real command line on the embedded stack: a session id ``x-[/]`` crashed
``sessions list`` and ``history show`` with rich's ``MarkupError``,
``[link=...]`` in content became a clickable link, ``\x1b[31m`` reached the
terminal raw, and an error's install hint lost its ``[metrics]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis
from click.testing import CliRunner, Result
from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.keys import ReadModelKeys
from chatlog.projector import Projector
from tests.helpers import cli_args

BRACKETS = "x-[/]"
LINK = "[link=https://evil.example]click me"
STYLE = "[bold red]alarm[/bold red]"
ANSI = "\x1b[31mred\x1b[0m"


def _run(settings: Settings, *args: str) -> Result:
    # A wide terminal keeps rich from wrapping table cells, so the literal text stays whole.
    result = CliRunner().invoke(cli, cli_args(settings, *args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, (result.output, result.exception)
    assert "\x1b" not in result.output
    return result


def _hostile_session(chatlog: ChatLog, session_id: str = BRACKETS) -> None:
    history = chatlog.history(session_id, user_id="mallory")
    history.add_messages([HumanMessage(LINK), AIMessage(STYLE), HumanMessage(ANSI)])
    assert len(history.messages) == 3


def test_sessions_list_prints_a_markup_session_id_literally(
    settings: Settings, chatlog: ChatLog, projector: Projector
) -> None:
    """`sessions list` shows `x-[/]` as it is instead of failing with MarkupError."""
    _hostile_session(chatlog)
    result = _run(settings, "sessions", "list", "--user", "mallory")
    assert BRACKETS in result.output
    assert "sessions of mallory" in result.output


def test_history_show_prints_markup_and_escape_sequences_as_text(
    settings: Settings, chatlog: ChatLog, projector: Projector
) -> None:
    """`history show` prints links, styles and escape sequences in content as visible text."""
    _hostile_session(chatlog)
    result = _run(settings, "history", "show", BRACKETS, "--user", "mallory")
    assert f"session {BRACKETS}" in result.output
    assert LINK in result.output
    assert STYLE in result.output
    assert "\\x1b[31mred\\x1b[0m" in result.output


def test_history_show_json_escapes_controls_json_leaves_raw(
    settings: Settings, chatlog: ChatLog, projector: Projector
) -> None:
    """`history show --json` writes C1 controls and line separators as JSON escapes."""
    hostile = "a\x9b31mb\u2028c\u202ed"
    history = chatlog.history("json-session", user_id="mallory")
    history.add_messages([HumanMessage(hostile)])
    assert len(history.messages) == 1
    result = _run(settings, "history", "show", "json-session", "--user", "mallory", "--json")
    assert "\\u009b" in result.output and "\\u2028" in result.output and "\\u202e" in result.output
    assert not {"\x9b", "\u2028", "\u202e"} & set(result.output)
    assert json.loads(result.output)[0]["data"]["content"] == hostile


def test_replay_session_and_verify_print_a_markup_session_id_literally(
    settings: Settings, chatlog: ChatLog, projector: Projector, redis_client: redis.Redis
) -> None:
    """`replay session` and a failing `replay verify` name the session `x-[/]` as it is."""
    _hostile_session(chatlog)
    rebuilt = _run(settings, "replay", "session", BRACKETS)
    assert f"Rebuilt session {BRACKETS} in {settings.namespace}" in rebuilt.output
    redis_client.delete(ReadModelKeys(settings.namespace).messages(BRACKETS))
    verified = CliRunner().invoke(
        cli, cli_args(settings, "replay", "verify"), env={"COLUMNS": "250"}
    )
    assert verified.exit_code == 1, (verified.output, verified.exception)
    assert f"  {BRACKETS}: " in verified.output
    assert "1 differ" in verified.output


def test_import_reports_print_markup_session_ids_literally(
    settings: Settings, chatlog: ChatLog, projector: Projector, tmp_path: Path
) -> None:
    """Import progress and its conflict list print `x-[/]` literally, not as markup."""
    export = {
        "format": "chatlog.export",
        "version": 1,
        "sessions": [
            {
                "session_id": BRACKETS,
                "user_id": "mallory",
                "messages": [{"type": "human", "data": {"content": LINK, "type": "human"}}],
            }
        ],
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    first = _run(settings, "import", str(path), "--user", "mallory")
    assert f"(last: {BRACKETS})" in first.output
    export["sessions"][0]["messages"][0]["data"]["content"] = ANSI  # type: ignore[index]
    path.write_text(json.dumps(export), encoding="utf-8")
    second = CliRunner().invoke(
        cli, cli_args(settings, "import", str(path), "--user", "mallory"), env={"COLUMNS": "250"}
    )
    assert second.exit_code == 2, (second.output, second.exception)
    assert f"1 conflict(s): {BRACKETS}" in second.output


def test_an_error_hint_prints_its_brackets(settings: Settings) -> None:
    """`projector run --metrics-port` without prometheus-client names the extra literally."""
    blocked = "import sys; sys.modules['prometheus_client'] = None; "
    done = subprocess.run(
        [sys.executable, "-c", blocked + "from chatlog.cli import main; main()",
         *cli_args(settings, "projector", "run", "--metrics-port", "0")],
        env={**os.environ, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pip install 'chatlog[metrics]'" in done.stdout
