"""CLI commands for LangGraph threads: ``chatlog threads list --user U``.

A thin layer over :meth:`chatlog.histories.checkpointer.ChatLogCheckpointSaver.threads`;
registered on the root group in :mod:`chatlog.cli.commands`.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from chatlog.cli.escaping import escape_markup, visible_json
from chatlog.settings import Settings

console = Console()


@click.group()
def threads() -> None:
    """List a user's LangGraph threads (ChatLogCheckpointSaver)."""


@threads.command("list")
@click.option("--user", "user_id", required=True, help="The user whose threads to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def threads_list(ctx: click.Context, user_id: str, as_json: bool) -> None:
    """Print the user's live threads, most recently active first (no SCAN: one sorted set)."""
    # Imported here: langgraph is an optional extra.
    from chatlog.histories.checkpointer import ChatLogCheckpointSaver

    settings: Settings = ctx.find_root().obj["settings"]
    with ChatLogCheckpointSaver(settings) as saver:
        listed = saver.threads(user_id)
    if as_json:
        rows = [
            {"thread_id": t.thread_id, "last_active": t.last_active.isoformat()} for t in listed
        ]
        click.echo(visible_json(json.dumps(rows, indent=2)))
        return
    table = Table(title=f"threads of {escape_markup(user_id)}")
    for column in ("thread", "last activity"):
        table.add_column(column)
    for t in listed:
        table.add_row(escape_markup(t.thread_id), f"{t.last_active:%Y-%m-%d %H:%M:%S}")
    console.print(table)
