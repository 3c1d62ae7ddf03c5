"""The ``chatlog`` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from chatlog.errors import ChatLogError
from chatlog.settings import Settings

console = Console()


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group()
@click.option("--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers.")
@click.option("--redis-url", envvar="REDIS_URL", help="Redis URL of the read model.")
@click.option("--topic", envvar="CHATLOG_TOPIC", help="Event topic.")
@click.option("--namespace", envvar="CHATLOG_NAMESPACE", help="Read-model namespace.")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap_servers: str | None,
    redis_url: str | None,
    topic: str | None,
    namespace: str | None,
    verbose: int,
) -> None:
    """chatlog: chat histories event-sourced on Kafka, projected into Redis."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "kafka_bootstrap_servers": bootstrap_servers,
            "redis_url": redis_url,
            "topic": topic,
            "namespace": namespace,
        }.items()
        if v
    }
    ctx.obj = {"settings": Settings.from_env(**overrides), "overrides": overrides}


@cli.command()
@click.option(
    "--embedded/--no-embedded",
    default=None,
    help="Use the embedded broker and Redis (default: when none is configured).",
)
@click.pass_context
def demo(ctx: click.Context, embedded: bool | None) -> None:
    """Run a LangChain conversation on chatlog, then rebuild the read model from the log."""
    from chatlog.demo import demo_settings, run_demo

    if embedded is None:
        embedded = not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("REDIS_URL"))
    console.print(
        "[bold]chatlog demo[/] on "
        + ("the embedded stack (Tansu broker + redis-server)" if embedded else "configured services")
    )
    with demo_settings(_settings(ctx), embedded=embedded) as settings:
        report = run_demo(settings)
    for (user, session), messages in report.histories.items():
        table = Table(title=f"{session} (user {user}) — read back from Redis", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("type")
        table.add_column("content")
        for number, message in enumerate(messages, 1):
            table.add_row(str(number), message.type, str(message.content))
        console.print(table)
    verdict = "[green]identical[/]" if report.identical else "[red]DIFFERENT[/]"
    console.print(
        f"Read model deleted and rebuilt from the log ({report.events_replayed} events): {verdict}."
    )
    console.print(f"Demo took {report.seconds:.1f}s.")
    if not report.identical:
        sys.exit(1)


@cli.command()
def dev() -> None:
    """Run the embedded broker and Redis in the foreground; print the environment to export."""
    from chatlog.devstack import EmbeddedStack

    with EmbeddedStack() as stack:
        for name, value in stack.environment().items():
            click.echo(f"export {name}={value}")
        click.echo("# embedded stack running; Ctrl-C stops it (its data is in memory only)", err=True)
        stopped = False

        def _stop(signum: int, frame: object) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stopped:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@cli.group()
def projector() -> None:
    """Run and inspect the projector worker."""


@projector.command("run")
@click.pass_context
def projector_run(ctx: click.Context) -> None:
    """Consume the log and keep the Redis read model up to date (SIGTERM drains and exits 0)."""
    from chatlog.projector import Projector

    worker = Projector(_settings(ctx))

    def _stop(signum: int, frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()


@cli.group()
def history() -> None:
    """Read session histories."""


@history.command("show")
@click.argument("session_id")
@click.option("--user", "user_id", default=None, help="The session's owner.")
@click.option("--last", type=int, default=None, help="Only the newest N messages.")
@click.option("--json", "as_json", is_flag=True, help="Print LangChain message dicts as JSON.")
@click.pass_context
def history_show(
    ctx: click.Context, session_id: str, user_id: str | None, last: int | None, as_json: bool
) -> None:
    """Print a session's messages as the read model holds them."""
    from langchain_core.messages import messages_to_dict

    from chatlog.histories import ChatLog

    with ChatLog(_settings(ctx)) as chatlog:
        messages = chatlog.history(session_id, user_id, max_messages=last).messages
    if as_json:
        click.echo(json.dumps(messages_to_dict(messages), indent=2, ensure_ascii=False))
        return
    table = Table(title=f"session {session_id}")
    table.add_column("#", justify="right")
    table.add_column("type")
    table.add_column("content")
    for number, message in enumerate(messages, 1):
        table.add_row(str(number), message.type, str(message.content))
    console.print(table)


@cli.command()
@click.option("--quick", is_flag=True, help="Scaled-down sizes: a smoke run in under a minute.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None,
    help="Where to write the results (default benchmarks/results/latest.json).",
)
@click.option(
    "--embedded/--no-embedded",
    default=None,
    help="Use the embedded broker and Redis (default: when none is configured).",
)
@click.pass_context
def bench(ctx: click.Context, quick: bool, json_path: str | None, embedded: bool | None) -> None:
    """Measure chatlog against raw Kafka/Redis clients and LangChain's histories."""
    from pathlib import Path

    from chatlog.benchmarks import DEFAULT_RESULTS, BenchConfig, run_benchmarks

    path = Path(json_path) if json_path else DEFAULT_RESULTS
    if embedded is None and {"kafka_bootstrap_servers", "redis_url"} & ctx.obj["overrides"].keys():
        embedded = False
    config = BenchConfig.smoke() if quick else BenchConfig.full()
    report = run_benchmarks(
        config, settings=_settings(ctx), embedded=embedded, json_path=path
    )
    report.print(console)
    console.print(f"results written to {path}")


def main() -> None:
    """Console-script entry point: typed chatlog errors exit 1 with their message."""
    try:
        cli(standalone_mode=True)
    except ChatLogError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
