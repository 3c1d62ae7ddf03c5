"""A user's sessions page by page: ``ChatLog.sessions(user, limit=..., cursor=...)``.

Pages follow the user's session index (a sorted set scored by last
activity), newest first, ties in Redis's order (member bytes, descending).
The cursor names the last index entry a page examined, so a page never
repeats an entry of an earlier one however the index changed meanwhile;
a session whose activity moved it past the cursor (it was written to
since) shows up again only on a listing started afresh. As with
:func:`~chatlog.histories.sessions.list_sessions`, index entries whose
session is gone or owned by someone else are skipped, so a page may hold
fewer than ``limit`` sessions only when it is the last.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from chatlog.errors import InvalidCursorError, ReadModelError
from chatlog.histories.read_model import ReadModelReader
from chatlog.histories.sessions import SessionInfo, session_infos

#: An index position: (score, member bytes).
IndexPosition = tuple[float, bytes]


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of a user's sessions.

    Attributes:
        sessions: The sessions, most recently active first.
        next_cursor: Pass it as ``cursor=`` for the next page; ``None`` at the end.
    """

    sessions: list[SessionInfo]
    next_cursor: str | None

    def __iter__(self) -> Iterator[SessionInfo]:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)


def encode_cursor(position: IndexPosition) -> str:
    """The opaque cursor of an index position."""
    score, member = position
    return f"{score!r}~" + base64.urlsafe_b64encode(member).decode("ascii")


def decode_cursor(cursor: str) -> IndexPosition:
    """The index position of ``cursor``.

    Raises:
        InvalidCursorError: it is not a cursor :func:`encode_cursor` made.
    """
    try:
        text, _, member = cursor.partition("~")
        score = float(text)
        if not math.isfinite(score):
            raise ValueError("not a finite score")
        return score, base64.urlsafe_b64decode(member.encode("ascii"))
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidCursorError(
            f"{cursor!r} is not a session cursor; pass the previous page's next_cursor"
        ) from exc


def _after(
    client: redis.Redis, key: str, position: IndexPosition | None, count: int
) -> list[IndexPosition]:
    """Up to ``count`` index entries after ``position`` (newest first), or from the start."""
    if position is None:
        entries: list[Any] = client.zrevrange(key, 0, count - 1, withscores=True)
        return [(float(s), bytes(m)) for m, s in entries]
    score, member = position
    # Entries tied on the score come in descending member order; those after
    # the cursor's member are the rest of its tie, then lower scores follow.
    tied: list[Any] = client.zrangebyscore(key, score, score)
    ties = sorted((bytes(m) for m in tied), reverse=True)
    found = [(score, m) for m in ties if m < member][:count]
    if len(found) < count:
        lower: list[Any] = client.zrevrangebyscore(
            key, f"({score!r}", "-inf", start=0, num=count - len(found), withscores=True
        )
        found += [(float(s), bytes(m)) for m, s in lower]
    return found


def sessions_page(
    reader: ReadModelReader,
    user_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    shown_as: Callable[[str], str | None] = lambda stored: stored,
) -> SessionPage:
    """Up to ``limit`` of ``user_id``'s live sessions after ``cursor``.

    ``shown_as`` maps a stored session id to the id the caller sees (``None``:
    not the caller's; scoping by user uses it).

    Raises:
        ValueError: ``limit`` is not positive.
        InvalidCursorError: ``cursor`` is not one a page handed out.
        ReadModelError: Redis could not be read.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    position = decode_cursor(cursor) if cursor is not None else None
    keys = reader.current_keys()
    key = keys.user_sessions(user_id)
    found: list[SessionInfo] = []
    try:
        while len(found) < limit:
            entries = _after(reader.client, key, position, limit - len(found))
            if not entries:
                return SessionPage(found, None)
            ids = [m.decode("utf-8", "replace") for _, m in entries]
            found += session_infos(reader, user_id, ids, shown_as=shown_as)
            position = entries[-1]
        more = bool(_after(reader.client, key, position, 1))
    except redis.RedisError as exc:
        raise ReadModelError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
    return SessionPage(found, encode_cursor(position) if more and position else None)
