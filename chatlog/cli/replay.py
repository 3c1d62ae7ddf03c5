"""``chatlog replay ...``: rebuild, verify, drop read models; a thin layer over ``Replayer``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from chatlog.cli.escaping import escape_markup, visible_json
from chatlog.errors import ChatLogError, ConfigurationError, NamespaceInUseError
from chatlog.keys import active_namespace_key, validate_namespace
from chatlog.redis_clients import open_redis
from chatlog.settings import Settings

console = Console()


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@contextmanager
def _progress_bar(title: str, *, quiet: bool) -> Iterator[Any]:
    """A callback that draws a rich progress bar on stderr (or nothing when ``quiet``)."""
    from chatlog.projector.replay_progress import ReplayProgress

    if quiet:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TextColumn("partitions {task.fields[partitions]}"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    # Transient: the bar is cleared when the run ends, so the result line that follows
    # (on stdout, the same terminal) starts on a clean line instead of sharing the bar's.
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(escape_markup(title), total=None, rate="-", partitions="-", eta="-")

        def update(progress: ReplayProgress) -> None:
            eta = progress.eta_s
            bar.update(
                task,
                total=max(progress.total, progress.done),
                completed=progress.done,
                rate=f"{progress.rate:,.0f}",
                partitions=f"{progress.partitions_done}/{progress.partitions_total}",
                eta="-" if eta is None else f"{eta:.0f}s",
            )

        yield update


def _namespace_flag(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Validate a ``--namespace`` value here, so the error names the flag."""
    if value is None:
        return None
    try:
        return validate_namespace(value, setting="--namespace")
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def _namespace_option(
    *, required: bool = False, help: str = "Namespace (default: the active one)."
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The ``--namespace`` option of a replay command (into the ``target`` parameter)."""
    return click.option(
        "--namespace", "target", required=required, callback=_namespace_flag, help=help
    )


def _emit(payload: dict[str, Any], *, as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(visible_json(json.dumps(payload, ensure_ascii=False)))
    else:
        for line in lines:
            console.print(line)


@click.group()
def replay() -> None:
    """Rebuild read models from the log, check them against it, drop old ones."""


@replay.command("rebuild")
@_namespace_option(help="Namespace to build (a new one); or give --target.")
@click.option(
    "--target", "target_url", default=None,
    help="Build into this read-model store instead: redis://, sqlite:///PATH, "
    "postgresql://..., dynamodb://TABLE (see README, Backends).",
)
@click.option(
    "--redis-url",
    "target_redis_url",
    default=None,
    help="Build into this Redis deployment instead of the configured one.",
)
@click.option("--as-of", default=None, help="Build the state as of a time (ISO 8601 or epoch ms).")
@click.option("--switch", is_flag=True, help="Point readers and the projector at it when built.")
@click.option("--in-place", is_flag=True, help="Allow rebuilding the active namespace itself.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, no progress bar.")
@click.pass_context
def replay_rebuild(
    ctx: click.Context,
    target: str | None,
    target_url: str | None,
    target_redis_url: str | None,
    as_of: str | None,
    switch: bool,
    in_place: bool,
    as_json: bool,
) -> None:
    """Project the whole log into a namespace while the live one keeps serving.

    Resumes an unfinished rebuild of the same namespace from its checkpoint.
    """
    if target_url is not None:
        from chatlog.cli.targets import rebuild_target

        # The URL may carry a password: the bar names no URL.
        with _progress_bar("rebuild target", quiet=as_json) as update:
            payload, lines = rebuild_target(_settings(ctx), target_url, on_progress=update)
        _emit(payload, as_json=as_json, lines=lines)
        return
    if target is None:
        raise click.UsageError("give --namespace NS (a Redis namespace) or --target URL")
    from chatlog.cli.timestamps import parse_timestamp
    from chatlog.projector.gc_threshold import SERVICE_GC_THRESHOLD
    from chatlog.projector.replay import Replayer

    settings = _settings(ctx)
    client = open_redis(target_redis_url, mode=settings.redis_mode) if target_redis_url else None
    replayer = Replayer(settings, redis_client=client, gc_threshold=SERVICE_GC_THRESHOLD)
    if (
        not in_place
        and target_redis_url is None
        and target == replayer.active_namespace()
        and replayer.has_keys(target)
    ):
        raise NamespaceInUseError(
            f"namespace {target!r} is the active one; rebuild a new namespace with --switch "
            "(or pass --in-place to re-apply the log onto it)"
        )
    try:
        moment = parse_timestamp(as_of) if as_of else None
    except ChatLogError as exc:  # the library's error names no flag; this layer does
        raise click.BadParameter(str(exc), param_hint="'--as-of'") from exc
    with _progress_bar(f"rebuild {target}", quiet=as_json) as update:
        result = replayer.rebuild(target, as_of=moment, switch=switch, on_progress=update)
    lines = [
        f"{'Resumed and finished' if result.resumed else 'Built'} namespace "
        f"[bold]{escape_markup(target)}[/]: "
        f"{result.done} events read, {result.applied} applied, {result.skipped} already there, "
        f"{result.failed + result.undecodable} dead-lettered in {result.elapsed_s:.1f}s "
        f"({result.rate:,.0f} events/s)."
    ]
    if result.switched_from is not None:
        lines.append(
            f"Readers switched from {escape_markup(result.switched_from)} "
            f"to {escape_markup(target)}."
        )
    _emit(result.as_dict(), as_json=as_json, lines=lines)


@replay.command("drop")
@_namespace_option(required=True, help="Namespace to delete.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def replay_drop(ctx: click.Context, target: str, as_json: bool) -> None:
    """Delete every key of a namespace that is no longer active (refuses the active one)."""
    from chatlog.projector.replay import Replayer

    deleted = Replayer(_settings(ctx)).drop(target)
    _emit(
        {"namespace": target, "deleted_keys": deleted},
        as_json=as_json,
        lines=[f"Dropped namespace [bold]{escape_markup(target)}[/]: {deleted} keys deleted."],
    )


@replay.command("session")
@click.argument("session_id")
@_namespace_option()
@click.option(
    "--target", "target_url", default=None,
    help="Rebuild the session in this SQL or DynamoDB read model instead.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, no progress bar.")
@click.pass_context
def replay_session(
    ctx: click.Context, session_id: str, target: str | None, target_url: str | None,
    as_json: bool,
) -> None:
    """Rebuild one session from its partition of the log and swap it in atomically."""
    from chatlog.projector.replay import Replayer

    if target_url is not None and target is not None:
        raise click.UsageError("give --namespace (Redis) or --target (another store), not both")
    with _progress_bar(f"session {session_id}", quiet=as_json) as update:
        if target_url is not None:
            from chatlog.cli.targets import rebuild_target_session

            result = rebuild_target_session(
                _settings(ctx), target_url, session_id, on_progress=update
            )
        else:
            result = Replayer(_settings(ctx)).rebuild_session(
                session_id, target, on_progress=update
            )
    _emit(
        result.as_dict(),
        as_json=as_json,
        lines=[
            f"Rebuilt session [bold]{escape_markup(session_id)}[/] in "
            f"{escape_markup(result.namespace)} from partition "
            f"{result.partition}: {result.events} events, {result.messages} messages."
        ],
    )


@replay.command("checkpoints")
@_namespace_option(
    help="Namespace to rebuild LangGraph checkpoints into (default: the configured one, "
    "where ChatLogCheckpointSaver reads)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, no progress bar.")
@click.pass_context
def replay_checkpoints_command(ctx: click.Context, target: str | None, as_json: bool) -> None:
    """Rebuild the LangGraph checkpoints and pending writes from ``<topic>.checkpoints``."""
    from chatlog.projector.checkpoint_replay import replay_checkpoints

    with _progress_bar("checkpoints", quiet=as_json) as update:
        progress = replay_checkpoints(_settings(ctx), namespace=target, on_progress=update)
    _emit(
        progress.as_dict(),
        as_json=as_json,
        lines=[
            f"Rebuilt checkpoints into [bold]{escape_markup(progress.namespace)}[/]: "
            f"{progress.done} events "
            f"read, {progress.applied} applied, {progress.skipped} already there, "
            f"{progress.undecodable} undecodable ({progress.rate:,.0f} events/s)."
        ],
    )


@replay.command("verify")
@_namespace_option()
@click.option("--target", "target_url", default=None, help="Verify this read-model store instead.")
@click.option(
    "--repair", is_flag=True, help="Rebuild exactly the sessions that differ, then check them."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, no progress bar.")
@click.pass_context
def replay_verify(
    ctx: click.Context, target: str | None, target_url: str | None, repair: bool, as_json: bool
) -> None:
    """Recompute every session from the log; exit 1 if the read model differs anywhere.

    With --repair, exit 1 only if a session still differs after its repair.
    """
    from chatlog.projector.replay import Replayer

    with _progress_bar("verify", quiet=as_json) as update:
        if target_url is not None:
            from chatlog.cli.targets import verify_target

            report = verify_target(
                _settings(ctx), target_url, on_progress=update, repair=repair
            )
        else:
            report = Replayer(_settings(ctx)).verify(target, on_progress=update, repair=repair)
    lines = [
        f"Checked {report.sessions_checked} sessions of [bold]{escape_markup(report.namespace)}[/] "
        f"against "
        f"{report.progress.done} events: "
        + ("[green]identical[/]." if report.ok else f"[red]{len(report.differences)} differ[/].")
    ]
    for diff in report.differences:
        lines.append(
            f"  {escape_markup(diff.session_id)}: {', '.join(diff.kinds)} "
            f"(expected {diff.expected_count} messages, found {diff.actual_count}; "
            f"missing {diff.missing}, extra {diff.extra}, altered {diff.altered})"
        )
    if report.threads_checked or report.thread_differences:
        lines.append(
            f"Checked {report.threads_checked} LangGraph threads: "
            + ("[green]identical[/]." if not report.thread_differences
               else f"[red]{len(report.thread_differences)} differ[/] (rebuild the target).")
        )
    lines += [f"  thread {escape_markup(t)}" for t in report.thread_differences]
    for replayed in report.repaired:
        lines.append(
            f"Repaired {escape_markup(replayed.session_id)} from partition {replayed.partition}: "
            f"{replayed.events} events, {replayed.messages} messages."
        )
    for diff in report.remaining:
        lines.append(f"[red]Still differs after repair[/]: {escape_markup(diff.session_id)}")
    _emit(report.as_dict(), as_json=as_json, lines=lines)
    if not (report.healthy if repair else report.ok):
        sys.exit(1)


@replay.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def replay_status(ctx: click.Context, as_json: bool) -> None:
    """Show the active namespace and the pointer key that selects it."""
    from chatlog.projector.replay import Replayer

    settings = _settings(ctx)
    active = Replayer(settings).active_namespace()
    key = active_namespace_key(settings.topic)
    _emit(
        {"active_namespace": active, "pointer_key": key, "default": settings.namespace},
        as_json=as_json,
        lines=[
            f"Active namespace: [bold]{escape_markup(active)}[/] (pointer {escape_markup(key)})"
        ],
    )


@replay.command("namespaces")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def replay_namespaces(ctx: click.Context, as_json: bool) -> None:
    """List the topic's namespaces in Redis: key counts, the active one, rebuilds in progress."""
    from chatlog.projector.namespace_admin import list_namespaces

    listing = list_namespaces(_settings(ctx))
    lines = [f"Namespaces of topic [bold]{escape_markup(listing.topic)}[/]:"]
    for info in listing.namespaces:
        notes = []
        if info.active:
            notes.append("[green]active[/]")
        if info.rebuilding:
            notes.append("[yellow]rebuild in progress (or interrupted)[/]")
        elif info.rebuild.get("state"):
            notes.append(f"rebuilt ({escape_markup(info.rebuild['state'])})")
        lines.append(
            f"  {escape_markup(info.namespace)}: {info.keys} keys, {info.sessions} sessions"
            + (f" - {', '.join(notes)}" if notes else "")
        )
    _emit(listing.as_dict(), as_json=as_json, lines=lines)


@replay.command("sweep")
@click.option("--target", "target_url", required=True, help="The SQL or DynamoDB read model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def replay_sweep(ctx: click.Context, target_url: str, as_json: bool) -> None:
    """Delete idle-expired sessions' messages from a target (run it periodically, e.g. cron)."""
    from chatlog.cli.targets import sweep_target

    swept, url = sweep_target(_settings(ctx), target_url)
    _emit(
        {"target": url, "sessions_swept": swept},
        as_json=as_json,
        lines=[f"Swept {swept} idle-expired sessions from [bold]{escape_markup(url)}[/]."],
    )
