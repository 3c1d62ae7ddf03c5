"""CLI commands of encryption and erasure: ``chatlog erase`` and ``chatlog keys``.

Thin layers over :meth:`chatlog.histories.ChatLog.erase_user`,
:meth:`chatlog.producers.key_store.DataKeyStore.rotate` and
:meth:`chatlog.schemas.sealing.KeyEncryptionKey.generate`.
"""

from __future__ import annotations

import json
from typing import Any

import click

from chatlog.cli.escaping import visible
from chatlog.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def _echo_json(report: Any) -> None:
    click.echo(json.dumps(report.as_dict(), sort_keys=True))


@click.command()
@click.option("--user", "user_id", required=True, help="The user to erase.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def erase(ctx: click.Context, user_id: str, as_json: bool) -> None:
    """Erase a user: delete every session, then destroy the user's data keys (crypto-shredding)."""
    from chatlog.histories import ChatLog

    with ChatLog(_settings(ctx)) as chatlog:
        report = chatlog.erase_user(user_id)
    if as_json:
        _echo_json(report)
        return
    click.echo(
        f"deleted {len(report.sessions)} session(s) of {visible(user_id)}: "
        f"{' '.join(map(visible, report.sessions))}"
    )
    if report.shredded:
        click.echo(
            f"destroyed {len(report.keys_destroyed)} data key(s): every encrypted event of "
            f"{visible(user_id)} in the log and its backups is unreadable from now on"
        )
    elif report.encrypted:
        click.echo(f"no data key of {visible(user_id)} to destroy (no encrypted event of theirs)")
    else:
        click.echo(
            "encryption is off (CHATLOG_ENCRYPTION_KEY): the read model forgot the user, "
            "but the log still holds their events"
        )


@click.group()
def keys() -> None:
    """Key-encryption keys and the data-key store (<topic>.keys)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random key-encryption key for CHATLOG_ENCRYPTION_KEY."""
    from chatlog.schemas.sealing import KeyEncryptionKey

    click.echo(KeyEncryptionKey.generate().encoded())


@keys.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def keys_rotate(ctx: click.Context, as_json: bool) -> None:
    """Re-wrap every live data key under CHATLOG_ENCRYPTION_KEY; the log is not rewritten.

    Give the new key in CHATLOG_ENCRYPTION_KEY and the old one in
    CHATLOG_ENCRYPTION_OLD_KEYS (to every writer and projector first); once
    this has run, remove the old one everywhere and destroy it.
    """
    from chatlog.producers.key_store import DataKeyStore

    store = DataKeyStore(_settings(ctx))
    try:
        report = store.rotate()
    finally:
        store.close()
    if as_json:
        _echo_json(report)
        return
    click.echo(
        f"re-wrapped {report.rewrapped} of {report.live_keys} live data key(s) under "
        f"key-encryption key {report.kek_id}"
    )
    if report.retired_kek_ids:
        click.echo(
            f"no live key is wrapped by {', '.join(report.retired_kek_ids)} any more: remove "
            "it from CHATLOG_ENCRYPTION_OLD_KEYS everywhere, then destroy it"
        )
