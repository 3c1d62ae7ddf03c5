"""Backend change by replay: rebuild into SQLite, PostgreSQL, DynamoDB; LangChain reads it.

The log is written through :class:`~chatlog.ChatLog` on the embedded broker;
``chatlog replay rebuild --target URL`` and ``chatlog replay verify --target
URL`` run through the CLI against the real stores.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.projector.targets import open_target
from chatlog.projector.targets.live import TargetProjector
from chatlog.projector.targets.sql import engine_url
from tests.helpers import cli_args

CONVERSATION: list[BaseMessage] = [
    HumanMessage("What is the weather in Paris?", id="m1"),
    AIMessage(
        "",
        id="m2",
        tool_calls=[
            {"name": "weather", "args": {"city": "Paris"}, "id": "c1", "type": "tool_call"}
        ],
        usage_metadata={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
    ),
    ToolMessage("18 degrees, light rain", tool_call_id="c1", id="m3"),
    AIMessage("18 °C and light rain in Paris.", id="m4", response_metadata={"model": "x"}),
]


def langchain_history(kind: str, url: str, session_id: str) -> BaseChatMessageHistory:
    """LangChain's own history class for the store, on ``session_id``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community's sunset notice
        if kind == "dynamodb":
            from urllib.parse import parse_qs, urlsplit

            from langchain_community.chat_message_histories import DynamoDBChatMessageHistory

            parts = urlsplit(url)
            endpoint = parse_qs(parts.query)["endpoint_url"][0]
            return DynamoDBChatMessageHistory(
                table_name=parts.netloc, session_id=session_id, endpoint_url=endpoint
            )
        from langchain_community.chat_message_histories import SQLChatMessageHistory

        connect, table = engine_url(url)
        return SQLChatMessageHistory(
            session_id, table_name=table, connection=connect.render_as_string(False)
        )


def langchain_messages(kind: str, url: str, session_id: str) -> list[BaseMessage]:
    """The session as LangChain's own history class for the store reads it."""
    return list(langchain_history(kind, url, session_id).messages)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "dynamodb"])
def test_rebuild_into_a_store_verifies_and_langchain_reads_it(
    kind: str,
    settings: Settings,
    chatlog: ChatLog,
    target_url_factory: Callable[[str], str],
) -> None:
    """Rebuild --target, then verify --target is clean and LangChain's class reads the session."""
    chatlog.history("trip", "alice").add_messages(CONVERSATION)
    chatlog.history("other", "bob").add_messages([HumanMessage("hi", id="b1")])
    chatlog.history("gone", "bob").add_messages([HumanMessage("secret", id="g1")])
    chatlog.history("gone", "bob").clear()
    url = target_url_factory(kind)
    runner = CliRunner()

    def run(command: str) -> Result:
        return runner.invoke(cli, cli_args(settings, "replay", command, "--target", url, "--json"))

    built = run("rebuild")
    assert built.exit_code == 0, built.output
    result = json.loads(built.output)
    assert (result["events_read"], result["applied"], result["resumed"]) == (7, 7, False)
    again = run("rebuild")
    assert again.exit_code == 0, again.output
    resumed = json.loads(again.output)
    assert (resumed["resumed"], resumed["events_read"]) == (True, 0)

    checked = run("verify")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.output)
    assert (report["ok"], report["sessions_checked"]) == (True, 3)

    assert langchain_messages(kind, url, "trip") == CONVERSATION
    assert langchain_messages(kind, url, "gone") == []
    target = open_target(url, settings)
    try:
        assert set(target.user_sessions("bob")) == {"other", "gone"}
        assert set(target.user_sessions("alice")) == {"trip"}
    finally:
        target.close()


def test_verify_reports_a_tampered_sql_session(
    settings: Settings, chatlog: ChatLog, target_url_factory: Callable[[str], str]
) -> None:
    """A message row removed behind chatlog's back is reported missing, exit status 1."""
    import sqlalchemy as sa

    chatlog.history("t1", "alice").add_messages(CONVERSATION[:2])
    url = target_url_factory("sqlite")
    runner = CliRunner()

    def run(command: str) -> Result:
        return runner.invoke(cli, cli_args(settings, "replay", command, "--target", url, "--json"))

    built = run("rebuild")
    assert built.exit_code == 0, built.output
    connect, table = engine_url(url)
    engine = sa.create_engine(connect)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE id = (SELECT MAX(id) FROM {table})"))
    engine.dispose()
    checked = run("verify")
    assert checked.exit_code == 1, checked.output
    [difference] = json.loads(checked.output)["differences"]
    assert (difference["session_id"], difference["kinds"]) == ("t1", ["missing"])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "dynamodb"])
def test_replay_session_and_verify_repair_restore_sessions_changed_behind_chatlog(
    kind: str, settings: Settings, chatlog: ChatLog, target_url_factory: Callable[[str], str]
) -> None:
    """`replay session --target` rebuilds one session; `verify --target --repair` the rest."""
    chatlog.history("wiped", "alice").add_messages(CONVERSATION)
    chatlog.history("grown", "bob").add_messages(CONVERSATION[:1])
    chatlog.history("fine", "bob").add_messages(CONVERSATION[1:2])
    url = target_url_factory(kind)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, cli_args(settings, "replay", *args, "--target", url, "--json"))

    assert run("rebuild").exit_code == 0
    # Another writer (LangChain's own class) changes two sessions behind chatlog's back.
    langchain_history(kind, url, "wiped").clear()
    langchain_history(kind, url, "grown").add_message(HumanMessage("foreign", id="f1"))
    checked = run("verify")
    assert checked.exit_code == 1, checked.output
    assert {d["session_id"] for d in json.loads(checked.output)["differences"]} == {
        "wiped", "grown"
    }

    rebuilt = run("session", "grown")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (json.loads(rebuilt.output)["session_events"], json.loads(rebuilt.output)["messages"]) \
        == (1, 1)
    assert langchain_messages(kind, url, "grown") == CONVERSATION[:1]

    repaired = run("verify", "--repair")
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.output)
    assert (report["ok"], report["healthy"], report["remaining"]) == (False, True, [])
    assert [r["session_id"] for r in report["repaired"]] == ["wiped"]
    assert langchain_messages(kind, url, "wiped") == CONVERSATION
    assert langchain_messages(kind, url, "fine") == CONVERSATION[1:2]
    assert json.loads(run("verify").output)["ok"] is True
    target = open_target(url, settings)
    try:
        assert set(target.user_sessions("bob")) == {"grown", "fine"}
    finally:
        target.close()


def test_replay_session_with_a_redis_target_names_the_namespace_command(
    settings: Settings, chatlog: ChatLog, target_url_factory: Callable[[str], str]
) -> None:
    """A Redis session is rebuilt with --namespace (scratch namespace and swap)."""
    chatlog.history("r", "alice").add_messages(CONVERSATION[:1])
    result = CliRunner().invoke(cli, cli_args(
        settings, "replay", "session", "r", "--target", target_url_factory("redis")
    ))
    assert result.exit_code != 0
    assert "--namespace" in str(result.exception) + result.output


def test_live_projector_continues_a_rebuilt_store_from_its_positions(
    settings: Settings, chatlog: ChatLog, target_url_factory: Callable[[str], str]
) -> None:
    """A rebuild then the target's own projector: later appends arrive, nothing twice."""
    from chatlog.projector.targets.rebuild import TargetReplayer
    from tests.helpers import eventually

    history = chatlog.history("live", "alice")
    history.add_messages(CONVERSATION[:2])
    url = target_url_factory("sqlite")
    target = open_target(url, settings)
    assert TargetReplayer(settings, target).rebuild().applied == 2
    worker = TargetProjector(settings, open_target(url, settings))
    with worker.running():
        history.add_messages(CONVERSATION[2:])
        eventually(lambda: len(target.read_session("live")) == 4)
    assert langchain_messages("sqlite", url, "live") == CONVERSATION
    assert worker.applied == 2  # the rebuilt events were not read again
    assert TargetReplayer(settings, target).verify().ok
    target.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "dynamodb"])
def test_chatlog_reads_its_own_writes_from_the_read_model_url(
    kind: str, reading_from: Callable[[str], tuple[ChatLog, TargetProjector]]
) -> None:
    """CHATLOG_READ_MODEL=URL: messages, last(n), ownership and listing come from the store."""
    from chatlog.errors import SessionOwnershipError

    chatlog, worker = reading_from(kind)
    with worker.running():
        history = chatlog.history("mine", "alice")
        history.add_messages(CONVERSATION)
        # Read-your-writes: waits until the target's projector applied them.
        assert history.messages == CONVERSATION
        assert history.last(2) == CONVERSATION[2:]
        with pytest.raises(SessionOwnershipError):
            chatlog.history("mine", "mallory").add_messages([HumanMessage("no")])
        [info] = chatlog.sessions("alice")
        assert (info.session_id, info.message_count) == ("mine", 4)
        history.clear()
        assert history.messages == []


def test_projector_run_with_a_target_projects_and_exits_zero_on_sigterm(
    settings: Settings, chatlog: ChatLog, target_url_factory: Callable[[str], str]
) -> None:
    """`chatlog projector run --target URL` keeps the store current; SIGTERM exits 0."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import eventually

    url = target_url_factory("sqlite")
    chatlog.history("cli", "alice").add_messages(CONVERSATION)
    worker = subprocess.Popen(
        [sys.executable, "-c", "from chatlog.cli import main; main()",
         *cli_args(settings, "projector", "run", "--target", url)],
        env={**os.environ, "CHATLOG_SESSION_TIMEOUT_MS": "6000",
             "CHATLOG_HEARTBEAT_INTERVAL_MS": "1000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    target = open_target(url, settings)
    try:
        eventually(lambda: len(target.read_session("cli")) == len(CONVERSATION), timeout_s=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "4 applied, 0 dead-lettered" in err
    assert langchain_messages("sqlite", url, "cli") == CONVERSATION
    swept = CliRunner().invoke(
        cli, cli_args(settings, "replay", "sweep", "--target", url, "--json")
    )
    assert swept.exit_code == 0, swept.output
    assert json.loads(swept.output)["sessions_swept"] == 0  # no idle TTL configured
    target.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "dynamodb"])
def test_versions_conditional_appends_and_pages_on_the_read_model_url(
    kind: str, reading_from: Callable[[str], tuple[ChatLog, TargetProjector]]
) -> None:
    """CHATLOG_READ_MODEL=URL: version, expected_version, paged reads and session pages."""
    from chatlog.errors import ConcurrentAppendError

    chatlog, worker = reading_from(kind)
    with worker.running():
        history = chatlog.history("paged", "alice")
        history.add_messages(CONVERSATION[:2])
        assert history.version == 2
        history.add_messages(CONVERSATION[2:], expected_version=2)
        with pytest.raises(ConcurrentAppendError) as refused:
            history.add_messages([HumanMessage("late", id="l1")], expected_version=2)
        assert (refused.value.expected, refused.value.found) == (2, 4)
        page = history.read(limit=3)
        assert (page.messages, page.start, page.next_before) == (CONVERSATION[1:], 1, 1)
        older = history.read(limit=3, before=page.next_before)
        assert (older.messages, older.next_before) == (CONVERSATION[:1], None)
        chatlog.history("second", "alice").add_messages([HumanMessage("x", id="x1")])
        first = chatlog.sessions("alice", limit=1)
        assert [s.session_id for s in first] == ["second"]
        rest = chatlog.sessions("alice", limit=1, cursor=first.next_cursor)
        assert ([s.session_id for s in rest], rest.next_cursor) == (["paged"], None)

        async def async_calls() -> tuple[int, list[BaseMessage], list[str]]:
            mine = chatlog.history("paged", "alice")
            await mine.aadd_messages([HumanMessage("more", id="a1")], expected_version=4)
            version = await mine.aget_version()
            window = await mine.aread(limit=1)
            listed = await chatlog.asessions("alice", limit=5)
            return version, window.messages, [s.session_id for s in listed]

        version, newest, listed = asyncio.run(async_calls())
        assert (version, newest) == (5, [HumanMessage("more", id="a1")])
        assert listed == ["paged", "second"]
        assert sorted(chatlog.delete_user("alice")) == ["paged", "second"]
        assert chatlog.sessions("alice") == []
        assert chatlog.history("paged", "alice").version == 0
