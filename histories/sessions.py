"""A user's sessions and who owns a session, read from the Redis read model.

The per-user index (a sorted set by last activity) is a hint kept by the
projector; the session's meta hash is the truth. Listing reads the index,
then every listed session's meta in one pipeline, and keeps only the
sessions that exist and that the user owns, so an entry left behind by an
expiry or a race never shows a session to the wrong user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import redis

from chatlog.errors import ReadModelError, SessionOwnershipError
from chatlog.histories.read_model import ReadModelReader
from chatlog.keys import (
    META_COUNT,
    META_CREATED,
    META_DELETED,
    META_EXPIRED,
    META_OWNER,
    META_TTL,
    META_UPDATED,
)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of a user as the read model holds it.

    Attributes:
        session_id: The session.
        user_id: Its owner.
        message_count: Messages in the history now (after clears).
        created_at: Time of the first event (since the last deletion).
        updated_at: Time of the newest event: the session's last activity.
        expires_at: When the idle TTL removes it, ``None`` if never.
        ttl_ms: The session's own TTL override, ``None`` when it uses the default.
    """

    session_id: str
    user_id: str
    message_count: int
    created_at: datetime | None
    updated_at: datetime | None
    expires_at: datetime | None
    ttl_ms: int | None


def _time(raw: bytes | None) -> datetime | None:
    if raw is None:
        return None
    return datetime.fromtimestamp(int(raw) / 1000, tz=timezone.utc)


def list_sessions(reader: ReadModelReader, user_id: str) -> list[SessionInfo]:
    """Every live session ``user_id`` owns, newest activity first.

    Raises:
        ReadModelError: Redis could not be read.
    """
    keys = reader.current_keys()
    client = reader.client
    try:
        members = client.zrevrange(keys.user_sessions(user_id), 0, -1)
        if not members:
            return []
        ids = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        pipe = client.pipeline(transaction=False)
        fields = [
            META_OWNER, META_COUNT, META_CREATED, META_UPDATED, META_DELETED, META_TTL, META_EXPIRED
        ]
        for session_id in ids:
            pipe.hmget(keys.meta(session_id), fields)
            pipe.pexpiretime(keys.meta(session_id))
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise ReadModelError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
    sessions = []
    for index, session_id in enumerate(ids):
        (owner, count, created, updated, deleted, ttl, expired) = replies[2 * index]
        expires = int(replies[2 * index + 1])
        if owner is None or owner.decode() != user_id or deleted is not None or expired:
            continue
        sessions.append(
            SessionInfo(
                session_id=session_id,
                user_id=user_id,
                message_count=int(count or 0),
                created_at=_time(created),
                updated_at=_time(updated),
                expires_at=_time(str(expires).encode()) if expires > 0 else None,
                ttl_ms=int(ttl) if ttl is not None else None,
            )
        )
    sessions.sort(key=lambda s: (s.updated_at or _EPOCH, s.session_id), reverse=True)
    return sessions


_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)


def session_owner(reader: ReadModelReader, session_id: str) -> str | None:
    """The user who owns ``session_id`` now, or ``None`` (unowned, deleted or unknown).

    Raises:
        ReadModelError: Redis could not be read.
    """
    keys = reader.current_keys()
    try:
        owner, expired = reader.client.hmget(keys.meta(session_id), [META_OWNER, META_EXPIRED])
    except redis.RedisError as exc:
        raise ReadModelError(f"reading the owner of session {session_id!r} failed: {exc}") from exc
    if expired is not None:
        return None  # idle-expired: the next writer starts it afresh
    return owner.decode() if isinstance(owner, bytes) else owner


def check_owner(session_id: str, owner: str | None, user_id: str | None) -> None:
    """Refuse access to an owned session under another (or no) user id.

    Raises:
        SessionOwnershipError: ``owner`` is set and is not ``user_id``.
    """
    if owner is None or owner == user_id:
        return
    if user_id is None:
        raise SessionOwnershipError(
            f"session {session_id!r} belongs to a user; open it with that user's id "
            "(chatlog.history(session_id, user_id=...), or --user on the command line)"
        )
    raise SessionOwnershipError(
        f"session {session_id!r} belongs to another user, not {user_id!r}; "
        "use a session id of this user's own (see ChatLog.sessions(user_id))"
    )
