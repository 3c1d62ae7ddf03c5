"""CLI commands for sessions and users: list, delete, export, import.

A thin layer over :class:`~chatlog.histories.ChatLog`,
:mod:`chatlog.histories.export` and :mod:`chatlog.histories.importers`;
registered on the root group in :mod:`chatlog.cli`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from chatlog.cli.escaping import escape_markup, visible, visible_json
from chatlog.redis_clients import open_redis
from chatlog.settings import Settings

console = Console()
err_console = Console(stderr=True)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.find_root().obj["settings"]
    return settings


@click.group()
def sessions() -> None:
    """List and delete a user's sessions."""


@sessions.command("list")
@click.option("--user", "user_id", required=True, help="The user whose sessions to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Page size: at most N sessions."
)
@click.option("--cursor", default=None, help="The next page (from the previous page's hint).")
@click.pass_context
def sessions_list(
    ctx: click.Context, user_id: str, as_json: bool, limit: int | None, cursor: str | None
) -> None:
    """Print the user's sessions, most recently active first, with message counts."""
    from chatlog.histories import ChatLog

    if cursor is not None and limit is None:
        raise click.UsageError("--cursor needs --limit")
    next_cursor = None
    with ChatLog(_settings(ctx)) as chatlog:
        if limit is None:
            listed = chatlog.sessions(user_id)
        else:
            page = chatlog.sessions(user_id, limit=limit, cursor=cursor)
            listed, next_cursor = page.sessions, page.next_cursor
    if next_cursor is not None:
        err_console.print(f"more sessions: --cursor {escape_markup(next_cursor)}")
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "session_id": s.session_id,
                "user_id": s.user_id,
                "message_count": s.message_count,
                "created_at": s.created_at.isoformat() if s.created_at else None,
                "updated_at": s.updated_at.isoformat() if s.updated_at else None,
                "expires_at": s.expires_at.isoformat() if s.expires_at else None,
                "ttl_ms": s.ttl_ms,
            }
            for s in listed
        ]
        click.echo(visible_json(json.dumps(rows, indent=2)))
        return
    table = Table(title=f"sessions of {escape_markup(user_id)}")
    for column in ("session", "messages", "created", "last activity", "expires"):
        table.add_column(column)
    for s in listed:
        table.add_row(
            escape_markup(s.session_id),
            str(s.message_count),
            f"{s.created_at:%Y-%m-%d %H:%M:%S}" if s.created_at else "",
            f"{s.updated_at:%Y-%m-%d %H:%M:%S}" if s.updated_at else "",
            f"{s.expires_at:%Y-%m-%d %H:%M:%S}" if s.expires_at else "never",
        )
    console.print(table)


@sessions.command("delete")
@click.argument("session_ids", nargs=-1)
@click.option("--user", "user_id", default=None, help="The sessions' owner.")
@click.option("--all", "everything", is_flag=True, help="Delete every session of --user.")
@click.pass_context
def sessions_delete(
    ctx: click.Context, session_ids: tuple[str, ...], user_id: str | None, everything: bool
) -> None:
    """Delete sessions (every key in Redis, in replays too); --all deletes a whole user."""
    from chatlog.histories import ChatLog

    if everything == bool(session_ids):
        raise click.UsageError("give session ids, or --all with --user")
    if everything and user_id is None:
        raise click.UsageError("--all needs --user")
    with ChatLog(_settings(ctx)) as chatlog:
        if everything:
            assert user_id is not None
            deleted = chatlog.delete_user(user_id)
        else:
            for session_id in session_ids:
                chatlog.delete_session(session_id, user_id)
            deleted = list(session_ids)
    click.echo(f"deleted {len(deleted)} session(s): {' '.join(map(visible, deleted))}")


@click.command("export")
@click.option("--session", "session_ids", multiple=True, help="A session to export (repeatable).")
@click.option("--user", "user_id", default=None, help="The owner; alone: all of the user's.")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "jsonl"]), default="json", show_default=True
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="File (default: stdout)."
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Seal each session's messages under its subject's data key "
    "(CHATLOG_ENCRYPTION_KEY): erasing the user makes the file unreadable too.",
)
@click.pass_context
def export(
    ctx: click.Context,
    session_ids: tuple[str, ...],
    user_id: str | None,
    fmt: str,
    output: str | None,
    encrypt: bool,
) -> None:
    """Export sessions as JSON or JSON Lines (LangChain's messages_to_dict form)."""
    from chatlog.histories import ChatLog
    from chatlog.histories.export import export_sessions, open_export_file, write_export

    if not session_ids and user_id is None:
        raise click.UsageError("give --session, or --user to export all of a user's sessions")
    settings = _settings(ctx)
    if encrypt and not settings.encryption_key:
        raise click.UsageError("--encrypt needs CHATLOG_ENCRYPTION_KEY")
    with ChatLog(settings) as chatlog:
        key_store = chatlog.producer.key_store if encrypt else None
        chosen = export_sessions(chatlog, user_id=user_id, session_ids=session_ids or None)
        if output is None:
            count = write_export(
                chosen, sys.stdout, fmt=fmt, key_store=key_store  # type: ignore[arg-type]
            )
        else:
            with open_export_file(output) as out:
                count = write_export(
                    chosen, out, fmt=fmt, key_store=key_store  # type: ignore[arg-type]
                )
    err_console.print(f"exported {count} session(s)")


@click.command("import")
@click.argument("path", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--session", "session_id", default=None, help="Session of a bare message list.")
@click.option(
    "--user",
    "user_id",
    default=None,
    help="Owner to give every imported session (required unless --trust-file-owners).",
)
@click.option(
    "--trust-file-owners",
    is_flag=True,
    help="Keep the owners the source names (a file's user_id, or none for a LangChain "
    "store): whoever wrote the file chooses whose sessions it appends to.",
)
@click.option(
    "--from-redis",
    "redis_url",
    default=None,
    envvar="CHATLOG_IMPORT_REDIS_URL",
    show_envvar=True,
    help="Redis URL of a LangChain RedisChatMessageHistory store (prefer the variable: "
    "flags show in process lists).",
)
@click.option("--prefix", default="message_store:", show_default=True, help="Its key prefix.")
@click.option(
    "--from-sql",
    "sql_url",
    default=None,
    envvar="CHATLOG_IMPORT_SQL_URL",
    show_envvar=True,
    help="SQLAlchemy URL of a LangChain SQLChatMessageHistory database (prefer the variable: "
    "flags show in process lists).",
)
@click.option("--table", default="message_store", show_default=True, help="Its table.")
@click.pass_context
def import_(
    ctx: click.Context,
    path: str | None,
    session_id: str | None,
    user_id: str | None,
    trust_file_owners: bool,
    redis_url: str | None,
    prefix: str,
    sql_url: str | None,
    table: str,
) -> None:
    """Publish histories from an export file or a LangChain store (safe to re-run).

    The owner comes from --user; the owners inside the file are used only
    with --trust-file-owners (a file can claim any user).
    """
    from click.core import ParameterSource

    from chatlog.histories import ChatLog
    from chatlog.histories.importers import (
        ImportProgress,
        import_sessions,
        read_export,
        read_langchain_redis,
        read_langchain_sql,
    )

    # A source given on the command line wins over CHATLOG_IMPORT_*_URL, so a
    # variable left in the environment does not get in the way of a file import.
    given = {"path": path, "redis_url": redis_url, "sql_url": sql_url}
    explicit = {
        name for name, value in given.items()
        if value is not None and ctx.get_parameter_source(name) is not ParameterSource.ENVIRONMENT
    }
    if explicit:
        redis_url = redis_url if "redis_url" in explicit else None
        sql_url = sql_url if "sql_url" in explicit else None
    if sum(x is not None for x in (path, redis_url, sql_url)) != 1:
        raise click.UsageError(
            "give exactly one of PATH, --from-redis (CHATLOG_IMPORT_REDIS_URL) or "
            "--from-sql (CHATLOG_IMPORT_SQL_URL)"
        )
    if (user_id is None) == (not trust_file_owners):
        raise click.UsageError(
            "give --user (the owner of every imported session) or --trust-file-owners "
            "(keep the owners the file names), not both"
            if trust_file_owners
            else "give --user (the owner of every imported session), or --trust-file-owners "
            "to keep the owners the file names: a file can claim any user"
        )
    owners: dict[str, Any] = {"user_id": user_id, "trust_file_owners": trust_file_owners}

    def report(progress: ImportProgress) -> None:
        err_console.print(
            f"{progress.sessions} session(s): {progress.messages_published} message(s) "
            f"published, {progress.messages_skipped} already there "
            f"(last: {escape_markup(progress.current)})"
        )

    with ChatLog(_settings(ctx)) as chatlog:
        if path is not None:
            # An encrypted export opens with the deployment's data keys.
            key_store = chatlog.producer.key_store if chatlog.settings.encryption_key else None
            done = import_sessions(
                chatlog,
                read_export(path, session_id=session_id, user_id=user_id, key_store=key_store),
                on_progress=report,
                **owners,
            )
        elif redis_url is not None:
            source = open_redis(redis_url, mode=chatlog.settings.redis_mode)
            try:
                done = import_sessions(
                    chatlog,
                    read_langchain_redis(source, prefix, user_id=user_id),
                    on_progress=report,
                    **owners,
                )
            finally:
                source.close()
        else:
            done = import_sessions(
                chatlog,
                read_langchain_sql(sql_url, table, user_id=user_id),
                on_progress=report,
                **owners,
            )
    click.echo(
        f"imported {done.sessions} session(s): {done.messages_published} message(s) published, "
        f"{done.messages_skipped} already there, {len(done.conflicts)} conflict(s)"
        + (f": {' '.join(map(visible, done.conflicts))}" if done.conflicts else "")
        + (
            f"; {len(done.shredded)} erased since the export (skipped): "
            f"{' '.join(map(visible, done.shredded))}"
            if done.shredded
            else ""
        )
    )
    if done.conflicts:
        sys.exit(2)
