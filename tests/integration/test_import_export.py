"""Export and import on real services: files, the CLI, and existing LangChain stores."""

from __future__ import annotations

import json
import pickle
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    messages_to_dict,
)

from chatlog import ChatLog, Settings
from chatlog.benchmarks.config import SUNSET_NOTICE
from chatlog.cli import cli
from chatlog.errors import SessionOwnershipError, UnsafeInputError
from chatlog.histories.export import export_sessions, write_export
from chatlog.histories.importers import (
    ImportProgress,
    import_sessions,
    read_export,
    read_langchain_redis,
    read_langchain_sql,
)
from chatlog.projector import Projector
from tests.helpers import cli_args, eventually, unique, without_ids

SETTINGS_OVERRIDES = {"partitions": 4}


with warnings.catch_warnings():
    # langchain-community warns on import that it is being sunset.
    warnings.filterwarnings("ignore", SUNSET_NOTICE, DeprecationWarning)
    from langchain_community.chat_message_histories import (
        RedisChatMessageHistory,
        SQLChatMessageHistory,
    )



def conversation(tag: str) -> list[BaseMessage]:
    return [
        HumanMessage(f"hello {tag}", id=f"{tag}-1"),
        AIMessage(
            "calling", tool_calls=[{"name": "f", "args": {"q": tag}, "id": "c1"}], id=f"{tag}-2"
        ),
        ToolMessage("42", tool_call_id="c1", artifact={"rows": [1]}, id=f"{tag}-3"),
    ]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_cli_export_then_import_restores_deleted_sessions_idempotently(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    tmp_path: Path,
    fmt: str,
) -> None:
    """Export --user, delete the user, import twice: the sessions come back once, loss-free."""
    alice = unique("alice")
    sessions = {unique("s"): conversation(str(i)) for i in range(2)}
    for session, messages in sessions.items():
        module_chatlog.history(session, alice).add_messages(messages)
        assert module_chatlog.history(session, alice).messages == messages
    path = tmp_path / f"export.{fmt}"
    runner = CliRunner()
    done = runner.invoke(
        cli, cli_args(module_settings, "export", "--user", alice, "--format", fmt, "-o", str(path))
    )
    assert done.exit_code == 0, done.output
    assert path.stat().st_mode & 0o777 == 0o600  # whole conversations: owner only
    exported = read_export(path)
    assert {s.session_id: list(s.messages) for s in exported} == sessions
    assert all(s.user_id == alice for s in exported)

    listed = runner.invoke(
        cli, cli_args(module_settings, "sessions", "list", "--user", alice, "--json")
    )
    assert sorted(r["session_id"] for r in json.loads(listed.output)) == sorted(sessions)
    deleted = runner.invoke(
        cli, cli_args(module_settings, "sessions", "delete", "--all", "--user", alice)
    )
    assert deleted.exit_code == 0, deleted.output
    for session in sessions:
        eventually(lambda s=session: module_chatlog.history(s, alice).messages == [])

    # The export is the user's own: restoring it may trust the owners it names.
    restore = ("import", str(path), "--trust-file-owners")
    first = runner.invoke(cli, cli_args(module_settings, *restore))
    assert first.exit_code == 0, first.output
    assert "6 message(s) published" in first.output
    again = runner.invoke(cli, cli_args(module_settings, *restore))
    assert again.exit_code == 0, again.output
    assert "0 message(s) published, 6 already there" in again.output
    for session, messages in sessions.items():
        assert module_chatlog.history(session, alice).messages == messages


def test_cli_keeps_users_apart(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector, tmp_path: Path
) -> None:
    """Another user can neither list, export, delete nor import over someone's session."""
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    module_chatlog.history(session, alice).add_messages([HumanMessage("private")])
    assert len(module_chatlog.history(session, alice).messages) == 1
    runner = CliRunner()
    listed = runner.invoke(
        cli, cli_args(module_settings, "sessions", "list", "--user", bob, "--json")
    )
    assert json.loads(listed.output) == []
    for args in (
        ["export", "--session", session, "--user", bob],
        ["export", "--session", session],
        ["sessions", "delete", session, "--user", bob],
        ["history", "show", session, "--user", bob],
    ):
        result = runner.invoke(cli, cli_args(module_settings, *args))
        assert isinstance(result.exception, SessionOwnershipError), (args, result.output)
    path = tmp_path / "theirs.json"
    path.write_text(json.dumps({"session_id": session, "user_id": bob, "messages": []}))
    result = runner.invoke(
        cli, cli_args(module_settings, "import", str(path), "--trust-file-owners")
    )
    assert isinstance(result.exception, SessionOwnershipError)
    assert without_ids(module_chatlog.history(session, alice).messages) == [HumanMessage("private")]


def test_import_reports_a_conflicting_session_and_appends_only_missing_tails(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """A session with other messages is a conflict; one holding a prefix gets the rest."""
    user = unique("u")
    same, diverged = unique("same"), unique("diverged")
    module_chatlog.history(same, user).add_messages([HumanMessage("1")])
    module_chatlog.history(diverged, user).add_messages([HumanMessage("other")])
    exported = [
        next(
            iter(
                read_export(json.dumps({"session_id": s, "user_id": user, "messages": m}).encode())
            )
        )
        for s, m in (
            (
                same,
                [
                    {"type": "human", "data": {"content": "1"}},
                    {"type": "ai", "data": {"content": "2"}},
                ],
            ),
            (diverged, [{"type": "human", "data": {"content": "mine"}}]),
        )
    ]
    seen: list[int] = []

    def progress(p: ImportProgress) -> None:
        seen.append(p.sessions)

    done = import_sessions(module_chatlog, exported, user_id=user, on_progress=progress)
    assert (done.messages_published, done.conflicts, seen) == (1, [diverged], [1, 2])
    assert without_ids(module_chatlog.history(same, user).messages) == [
        HumanMessage("1"),
        AIMessage("2"),
    ]


def test_pickles_are_refused_without_loading(tmp_path: Path, redis_client: redis.Redis) -> None:
    """A .pkl file, pickle bytes in a .json file and pickled Redis values raise UnsafeInputError."""
    payload = pickle.dumps([HumanMessage("x")])
    named = tmp_path / "history.pkl"
    named.write_bytes(b"[]")
    disguised = tmp_path / "history.json"
    disguised.write_bytes(payload)
    for source in (named, disguised, payload):
        with pytest.raises(UnsafeInputError, match="pickle"):
            read_export(source, session_id="s")
    prefix = unique("pickled") + ":"
    redis_client.rpush(prefix + "s1", payload)
    try:
        with pytest.raises(UnsafeInputError):
            list(read_langchain_redis(redis_client, prefix))
    finally:
        redis_client.delete(prefix + "s1")


def langchain_redis_store(redis_url: str, count: int) -> tuple[str, dict[str, list[BaseMessage]]]:
    """``count`` RedisChatMessageHistory sessions under a new prefix: the prefix and them."""
    prefix = unique("lc") + ":"
    source = {unique("s"): conversation(str(i)) for i in range(count)}
    for session, messages in source.items():
        RedisChatMessageHistory(session, url=redis_url, key_prefix=prefix).add_messages(messages)
    return prefix, source


def test_import_from_langchain_redis_prefix_is_idempotent_and_resumes(
    redis_url: str, redis_client: redis.Redis, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Every RedisChatMessageHistory session under a prefix is imported once; new tails later."""
    prefix, source = langchain_redis_store(redis_url, 3)
    user = unique("u")
    redis_client.set(prefix + "not-a-list", "x")
    try:
        done = import_sessions(
            module_chatlog, read_langchain_redis(redis_client, prefix, user_id=user)
        )
        assert (done.sessions, done.messages_published) == (3, 9)
        for session, messages in source.items():
            assert module_chatlog.history(session, user).messages == messages
        first = next(iter(source))
        RedisChatMessageHistory(first, url=redis_url, key_prefix=prefix).add_message(
            HumanMessage("later")
        )
        again = import_sessions(
            module_chatlog, read_langchain_redis(redis_client, prefix, user_id=user)
        )
        assert (again.messages_published, again.messages_skipped, again.conflicts) == (1, 9, [])
        assert without_ids(module_chatlog.history(first, user).last(1)) == [HumanMessage("later")]
        assert sorted(s.session_id for s in module_chatlog.sessions(user)) == sorted(source)
    finally:
        redis_client.delete(*redis_client.keys(prefix + "*"))


def test_cli_import_takes_its_source_url_from_the_environment(
    redis_url: str,
    redis_client: redis.Redis,
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    tmp_path: Path,
) -> None:
    """CHATLOG_IMPORT_REDIS_URL keeps credentials off the command line; PATH still wins."""
    prefix, source = langchain_redis_store(redis_url, 2)
    user = unique("u")
    runner = CliRunner()
    env = {"CHATLOG_IMPORT_REDIS_URL": redis_url}
    try:
        done = runner.invoke(
            cli, cli_args(module_settings, "import", "--prefix", prefix, "--user", user), env=env
        )
        assert done.exit_code == 0, done.output
        assert "imported 2 session(s): 6 message(s) published" in done.output
        for session, messages in source.items():
            assert module_chatlog.history(session, user).messages == messages
        path = tmp_path / "one.json"
        path.write_text(json.dumps(messages_to_dict(conversation("file"))))
        session = unique("file")
        from_file = runner.invoke(
            cli,
            cli_args(module_settings, "import", str(path), "--session", session, "--user", user),
            env=env,
        )
        assert from_file.exit_code == 0, from_file.output
        assert "imported 1 session(s): 3 message(s) published" in from_file.output
    finally:
        redis_client.delete(*redis_client.keys(prefix + "*"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A SQLAlchemy URL and a table name of this test alone (dropped afterwards).

    The ``postgresql`` case needs a PostgreSQL server: the ``postgres_url``
    fixture finds the machine's or starts one, and fails (never skips) without.
    """
    table = f"chatlog_import_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    yield url, table
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


def test_import_from_langchain_sql_table_is_idempotent(
    sql_store: tuple[str, str], module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Every SQLChatMessageHistory session of a table is imported once, in id order."""
    url, table = sql_store
    user = unique("u")
    engine = sa.create_engine(url)
    source = {unique("s"): conversation(str(i)) for i in range(2)}
    try:
        for session, messages in source.items():
            SQLChatMessageHistory(session, table_name=table, connection=engine).add_messages(
                messages
            )
        done = import_sessions(module_chatlog, read_langchain_sql(engine, table, user_id=user))
        assert (done.sessions, done.messages_published) == (2, 6)
        for session, messages in source.items():
            assert module_chatlog.history(session, user).messages == messages
        again = import_sessions(module_chatlog, read_langchain_sql(url, table, user_id=user))
        assert (again.messages_published, again.messages_skipped) == (0, 6)
    finally:
        engine.dispose()


def test_export_api_writes_langchain_messages_to_dict(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """The JSON export holds exactly messages_to_dict of the history."""
    import io

    from langchain_core.messages import messages_to_dict

    user, session = unique("u"), unique("s")
    messages = conversation("x")
    module_chatlog.history(session, user).add_messages(messages)
    assert module_chatlog.history(session, user).messages == messages
    out = io.StringIO()
    assert write_export(export_sessions(module_chatlog, user_id=user), out) == 1
    document = json.loads(out.getvalue())
    assert document["sessions"] == [
        {"session_id": session, "user_id": user, "messages": messages_to_dict(messages)}
    ]
