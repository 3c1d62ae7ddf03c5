"""Points in time as the command line takes them (``--as-of``)."""

from __future__ import annotations

from datetime import datetime, timezone

from chatlog.errors import ReplayError


def parse_timestamp(value: str) -> datetime:
    """Parse a point in time: ISO 8601 (UTC when no zone is given) or epoch milliseconds.

    Raises:
        ReplayError: ``value`` is neither.

    """
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(
            f"{value!r} is not a time: give ISO 8601 (2026-01-31T12:00:00Z) "
            "or epoch milliseconds"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
