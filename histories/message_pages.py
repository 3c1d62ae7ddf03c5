"""A session's history page by page, newest page first: ``history.read(limit=, before=)``."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.messages import BaseMessage

from chatlog.histories.messages import from_stored
from chatlog.histories.read_model import SessionSnapshot


@dataclass(frozen=True, slots=True)
class MessagePage:
    """Consecutive messages of a session, in log order.

    Positions count from the session's first message (since its last clear):
    ``messages[0]`` is at ``start``. Positions stay put while messages are
    appended, so paging backwards with ``next_before`` neither repeats nor
    skips a message; a clear starts the count again.

    Attributes:
        messages: The messages, oldest first.
        start: The position of ``messages[0]``.
        next_before: Pass it as ``before=`` for the page of older messages;
            ``None`` when this page starts at the first message.
    """

    messages: list[BaseMessage]
    start: int
    next_before: int | None


def check_page_arguments(limit: int | None, before: int | None) -> None:
    """Refuse a page size below 1 or a negative position.

    Raises:
        ValueError: one of them is.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for all), got {limit}")
    if before is not None and before < 0:
        raise ValueError(f"before must be a position (0 or more), got {before}")


def message_page(snapshot: SessionSnapshot) -> MessagePage:
    """The page of a window read (:meth:`ReadModelReader.read_window`)."""
    start = snapshot.start
    return MessagePage(from_stored(snapshot.messages), start, start if start > 0 else None)
