"""The ``chatlog`` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from chatlog.cli.config import effective_configuration, settings_from_flags, settings_options
from chatlog.cli.escaping import escape_markup, visible_json
from chatlog.errors import ChatLogError
from chatlog.secrets import mask_secrets
from chatlog.settings import Settings

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

console = Console()


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


#: Settings with a flag of their own elsewhere (the root's short names, ``projector run``).
_OWN_FLAGS = frozenset(
    {"kafka_bootstrap_servers", "redis_url", "topic", "namespace", "metrics_port",
     "metrics_host", "log_format", "ready_max_lag"}
)


@click.group()
@settings_options(exclude=_OWN_FLAGS)
@click.option(
    "--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers."
)
@click.option("--redis-url", envvar="REDIS_URL", help="Redis URL of the read model.")
@click.option("--topic", envvar="CHATLOG_TOPIC", help="Event topic.")
@click.option("--namespace", envvar="CHATLOG_NAMESPACE", help="Read-model namespace.")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def cli(
    ctx: click.Context,
    /,
    bootstrap_servers: str | None,
    redis_url: str | None,
    topic: str | None,
    namespace: str | None,
    verbose: int,
    **setting_flags: Any,
) -> None:
    """chatlog: chat histories event-sourced on Kafka, projected into Redis.

    Every setting has a flag (--partitions 24) and an environment variable
    (CHATLOG_PARTITIONS=24); flags win. "chatlog config show" prints what is in effect.
    """
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
    ctx.obj = {
        "settings": settings_from_flags(setting_flags, **overrides),
        "overrides": overrides,
        "verbose": verbose,
    }


@cli.command()
@click.option(
    "--embedded/--no-embedded",
    default=None,
    help="Use the embedded broker and Redis (default: when none is configured).",
)
@click.pass_context
def demo(ctx: click.Context, embedded: bool | None) -> None:
    """Run LangChain and LangGraph conversations on chatlog, then rebuild from the log."""
    from chatlog.cli.demo import LANGGRAPH_HINT, demo_settings, run_demo

    if embedded is None:
        embedded = not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("REDIS_URL"))
    console.print(
        "[bold]chatlog demo[/] on "
        + (
            "the embedded stack (Tansu broker + redis-server)"
            if embedded
            else "configured services"
        )
    )
    with demo_settings(_settings(ctx), embedded=embedded) as settings:
        report = run_demo(settings)
    for (user, session), messages in report.histories.items():
        console.print(messages_table(f"{session} (user {user}) — read back from Redis", messages))
    verdict = "[green]identical[/]" if report.identical else "[red]DIFFERENT[/]"
    console.print(
        f"Read model deleted and rebuilt from the log ({report.events_replayed} events): {verdict}."
    )
    if report.graph is None:
        console.print(
            "LangGraph path skipped: LangGraph is not installed "
            f"({escape_markup(LANGGRAPH_HINT)} adds ChatLogCheckpointSaver)."
        )
    else:
        graph = report.graph
        console.print(
            f"[bold]LangGraph[/]: a StateGraph compiled with ChatLogCheckpointSaver, thread "
            f"{escape_markup(graph.thread_id)}; restarted (a new saver and graph) and resumed."
        )
        console.print(messages_table("before the restart", graph.before_restart))
        console.print(messages_table("resumed after the restart", graph.resumed))
    console.print(f"Demo took {report.seconds:.1f}s.")
    if not report.identical:
        sys.exit(1)


@cli.command()
def dev() -> None:
    """Run the embedded broker and Redis in the foreground; print the environment to export."""
    from chatlog.cli.devstack import EmbeddedStack

    stopped = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True

    # Installed before the export lines are printed: a caller that reads them
    # and sends SIGTERM at once must get a clean shutdown, not the default kill.
    signal.signal(signal.SIGTERM, _stop)
    with EmbeddedStack() as stack:
        for name, value in stack.environment().items():
            click.echo(f"export {name}={value}")
        click.echo(
            "# embedded stack running; Ctrl-C stops it (its data is in memory only)", err=True
        )
        try:
            while not stopped:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@cli.group()
def projector() -> None:
    """Run and inspect the projector worker."""


@projector.command("run")
@click.option(
    "--metrics-port", type=int, default=None, envvar="CHATLOG_METRICS_PORT",
    help="Serve /metrics, /healthz and /readyz on this port (0: any free port).",
)
@click.option(
    "--metrics-host", default=None, envvar="CHATLOG_METRICS_HOST",
    help="Address the metrics server binds (default 127.0.0.1; 0.0.0.0 for all).",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None,
    envvar="CHATLOG_LOG_FORMAT", help="Log lines as text or JSON objects.",
)
@click.option(
    "--ready-max-lag", type=int, default=None, envvar="CHATLOG_READY_MAX_LAG",
    help="/readyz is 200 while the assigned partitions are at most this many events behind.",
)
@click.option(
    "--target", "target_url", default=None,
    help="Project into this read-model store instead of Redis (its own consumer group): "
    "sqlite:///PATH, postgresql://..., dynamodb://TABLE.",
)
@click.pass_context
def projector_run(
    ctx: click.Context,
    metrics_port: int | None,
    metrics_host: str | None,
    log_format: str | None,
    ready_max_lag: int | None,
    target_url: str | None,
) -> None:
    """Consume the log and keep the Redis read model up to date (SIGTERM drains and exits 0)."""
    from chatlog.cli.log_format import configure_logging
    from chatlog.projector.service import run_service

    changes = {
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
        "log_format": log_format,
        "ready_max_lag": ready_max_lag,
    }
    settings = _settings(ctx).with_(**{k: v for k, v in changes.items() if v is not None})
    # A worker logs its rebalances and outages at INFO; -vv still asks for DEBUG.
    level = logging.DEBUG if ctx.obj["verbose"] > 1 else logging.INFO
    configure_logging(settings.log_format, level)
    if target_url is not None:
        from chatlog.projector.targets import open_target
        from chatlog.projector.targets.live import run_target_service

        run_target_service(settings, open_target(target_url, settings))
        return
    run_service(settings)


@projector.command("lag")
@click.option("--group", default=None, help="Consumer group (default: the projector's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def projector_lag(ctx: click.Context, group: str | None, as_json: bool) -> None:
    """Events not yet applied, per partition and in total (works with the worker stopped)."""
    from chatlog.projector.lag import consumer_lag

    report = consumer_lag(_settings(ctx), group=group)
    if as_json:
        click.echo(visible_json(json.dumps(report.to_dict(), indent=2)))
        return
    table = Table(title=escape_markup(f"lag of group {report.group} on {report.topic}"))
    for column in ("partition", "committed", "end", "lag"):
        table.add_column(column, justify="right")
    for p in report.partitions:
        committed = "-" if p.committed is None else str(p.committed)
        table.add_row(str(p.partition), committed, str(p.end), str(p.lag))
    table.add_row("total", "", "", str(report.total))
    console.print(table)


@projector.command("status")
@click.option("--group", default=None, help="Consumer group (default: the projector's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def projector_status(ctx: click.Context, group: str | None, as_json: bool) -> None:
    """Group state, members and assignments, last applied vs end offsets."""
    from chatlog.projector.lag import group_status

    status = group_status(_settings(ctx), group=group)
    if as_json:
        click.echo(visible_json(json.dumps(status.to_dict(), indent=2)))
        return
    console.print(
        f"group [bold]{escape_markup(status.group)}[/] is {escape_markup(status.state)} "
        f"with {len(status.members)} member(s)"
    )
    for member in status.members:
        assigned = (
            "assignment not reported by the broker"
            if member.partitions is None
            else "partitions " + (",".join(map(str, member.partitions)) or "none")
        )
        client = f"{member.member_id} {member.client_id}@{member.host}"
        console.print(f"  {escape_markup(client)}: {assigned}")
    table = Table(title=escape_markup(f"topic {status.lag.topic}"))
    for column in ("partition", "last applied", "end", "lag"):
        table.add_column(column, justify="right")
    for p in status.lag.partitions:
        last = "-" if p.last_applied is None else str(p.last_applied)
        table.add_row(str(p.partition), last, str(p.end), str(p.lag))
    table.add_row("total", "", "", str(status.lag.total))
    console.print(table)


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective configuration (defaults < environment < flags), secrets masked."""
    shown = effective_configuration(_settings(ctx))
    if as_json:
        click.echo(visible_json(json.dumps(shown, indent=2, default=str)))
        return
    table = Table(title="effective configuration")
    table.add_column("setting")
    table.add_column("value")
    for name, value in shown.items():
        table.add_row(name, "" if value is None else escape_markup(value))
    console.print(table)


@cli.group()
def history() -> None:
    """Read session histories."""


@history.command("show")
@click.argument("session_id")
@click.option("--user", "user_id", default=None, help="The session's owner.")
@click.option("--last", type=int, default=None, help="Only the newest N messages.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Page size: at most N messages."
)
@click.option(
    "--before",
    type=click.IntRange(min=0),
    default=None,
    help="Page of messages before this position (from the previous page's hint).",
)
@click.option("--json", "as_json", is_flag=True, help="Print LangChain message dicts as JSON.")
@click.pass_context
def history_show(
    ctx: click.Context,
    session_id: str,
    user_id: str | None,
    last: int | None,
    limit: int | None,
    before: int | None,
    as_json: bool,
) -> None:
    """Print a session's messages as the read model holds them (--limit/--before: a page)."""
    from langchain_core.messages import messages_to_dict

    from chatlog.histories import ChatLog

    first, older = 1, None
    with ChatLog(_settings(ctx)) as chatlog:
        if limit is None and before is None:
            messages = chatlog.history(session_id, user_id, max_messages=last).messages
        else:
            page = chatlog.history(session_id, user_id).read(limit=limit, before=before)
            messages, first, older = page.messages, page.start + 1, page.next_before
    if as_json:
        shown = json.dumps(messages_to_dict(messages), indent=2, ensure_ascii=False)
        click.echo(visible_json(shown))
    else:
        console.print(messages_table(f"session {session_id}", messages, first=first))
    if older is not None:
        Console(stderr=True).print(f"older messages: --before {older}")


def messages_table(title: str, messages: list[BaseMessage], *, first: int = 1) -> Table:
    """A table of ``messages`` (number, type, content), every user string escaped."""
    table = Table(title=escape_markup(title))
    table.add_column("#", justify="right")
    table.add_column("type")
    table.add_column("content")
    for number, message in enumerate(messages, first):
        table.add_row(
            str(number), escape_markup(message.type), escape_markup(message.content, multiline=True)
        )
    return table


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
@click.option(
    "--readme", "readme_path", type=click.Path(dir_okay=False, exists=True), default=None,
    help="Also render the results into this README's benchmark table.",
)
@click.pass_context
def bench(
    ctx: click.Context, quick: bool, json_path: str | None, embedded: bool | None,
    readme_path: str | None,
) -> None:
    """Measure chatlog against raw Kafka/Redis clients and LangChain's histories."""
    from pathlib import Path

    from chatlog.benchmarks import DEFAULT_RESULTS, BenchConfig, run_benchmarks
    from chatlog.benchmarks.render import update_readme

    path = Path(json_path) if json_path else DEFAULT_RESULTS
    if embedded is None and {"kafka_bootstrap_servers", "redis_url"} & ctx.obj["overrides"].keys():
        embedded = False
    config = BenchConfig.smoke() if quick else BenchConfig.full()
    report = run_benchmarks(
        config, settings=_settings(ctx), embedded=embedded, json_path=path
    )
    report.print(console)
    console.print(f"results written to {escape_markup(path)}")
    if readme_path is not None:
        update_readme(Path(readme_path), path)
        console.print(f"benchmark table of {escape_markup(readme_path)} rendered from them")


from chatlog.cli.sessions import export, import_, sessions  # noqa: E402 - registered here

cli.add_command(sessions)
cli.add_command(export)
cli.add_command(import_)

from chatlog.cli.replay import replay  # noqa: E402 - registered here

cli.add_command(replay)

from chatlog.cli.privacy import erase, keys  # noqa: E402 - registered here

cli.add_command(erase)
cli.add_command(keys)
from chatlog.cli.threads import threads  # noqa: E402 - registered here

cli.add_command(threads)


def main() -> None:
    """Console-script entry point: typed chatlog errors exit 1 with their message."""
    try:
        cli(standalone_mode=True)
    except ChatLogError as exc:
        # An error quotes user input and hints such as `pip install 'chatlog[metrics]'`,
        # which rich would otherwise read as markup; secrets in quoted URLs are masked.
        console.print(f"[red]error:[/] {escape_markup(mask_secrets(str(exc)))}")
        sys.exit(1)

