"""``--target URL``: the replay and projector commands on another read-model store.

A thin layer over :mod:`chatlog.projector.targets`: open the store the URL
names, run the rebuild or verify, close it.
"""

from __future__ import annotations

from typing import Any

from chatlog.cli.escaping import escape_markup
from chatlog.projector.replay import ProgressCallback, VerifyReport
from chatlog.projector.session_rebuild import SessionReplay
from chatlog.projector.targets import open_target
from chatlog.projector.targets.rebuild import TargetReplayer
from chatlog.settings import Settings


def rebuild_target(
    settings: Settings, url: str, *, on_progress: ProgressCallback | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``chatlog replay rebuild --target URL``: project the log into the store, resumably.

    Returns the JSON result and the lines to print.
    """
    target = open_target(url, settings)
    try:
        result = TargetReplayer(settings, target).rebuild(on_progress=on_progress)
    finally:
        target.close()
    lines = [
        f"{'Resumed and finished' if result.resumed else 'Built'} "
        f"[bold]{escape_markup(target.url)}[/]: "
        f"{result.done} events read, {result.applied} applied, {result.skipped} already there, "
        f"{result.failed + result.undecodable} dead-lettered in {result.elapsed_s:.1f}s "
        f"({result.rate:,.0f} events/s)."
    ]
    return {**result.as_dict(), "target": target.url}, lines


def verify_target(
    settings: Settings,
    url: str,
    *,
    on_progress: ProgressCallback | None = None,
    repair: bool = False,
) -> VerifyReport:
    """``chatlog replay verify --target URL [--repair]``: the store's sessions against the log."""
    target = open_target(url, settings)
    try:
        return TargetReplayer(settings, target).verify(on_progress=on_progress, repair=repair)
    finally:
        target.close()


def rebuild_target_session(
    settings: Settings, url: str, session_id: str, *, on_progress: ProgressCallback | None = None
) -> SessionReplay:
    """``chatlog replay session SESSION --target URL``: rebuild one session in the store."""
    target = open_target(url, settings)
    try:
        return TargetReplayer(settings, target).rebuild_session(
            session_id, on_progress=on_progress
        )
    finally:
        target.close()


def sweep_target(settings: Settings, url: str) -> tuple[int, str]:
    """``chatlog replay sweep --target URL``: how many sessions were swept, and the store."""
    target = open_target(url, settings)
    try:
        return target.sweep(), target.url
    finally:
        target.close()
