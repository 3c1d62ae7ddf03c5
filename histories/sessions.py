"""A user's sessions and who owns a session, read from the Redis read model.

The per-user index (a sorted set by last activity) is a hint kept by the
projector; the session's meta hash is the truth. Listing reads the index,
then every listed session's meta in one pipeline, and keeps only the
sessions that exist and that the user owns, so an entry left behind by an
expiry or a race never shows a session to the wrong user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, NamedTuple

import redis

from chatlog.errors import ReadModelError, SessionOwnershipError
from chatlog.histories.read_model import ReadModelReader
from chatlog.keys import (
    META_COUNT,
    META_CREATED,
    META_DELETED,
    META_EXPIRED,
    META_OFFSET,
    META_OWNER,
    META_PARTITION,
    META_TTL,
    META_UPDATED,
    ReadModelKeys,
)
from chatlog.redis_clients import is_cluster


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


def list_sessions(
    reader: ReadModelReader,
    user_id: str,
    *,
    shown_as: Callable[[str], str | None] = lambda stored: stored,
) -> list[SessionInfo]:
    """Every live session ``user_id`` owns, newest activity first.

    ``shown_as`` maps a stored session id to the id the caller sees (``None``:
    not the caller's; scoping by user uses it).

    Raises:
        ReadModelError: Redis could not be read.
    """
    keys = reader.current_keys()
    client = reader.client
    try:
        ids = _ids(client.zrevrange(keys.user_sessions(user_id), 0, -1))
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        _queue_meta(pipe, keys, ids)
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise ReadModelError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
    return _newest_first(_sessions_of(user_id, ids, replies, shown_as))


async def alist_sessions(
    reader: ReadModelReader,
    user_id: str,
    *,
    shown_as: Callable[[str], str | None] = lambda stored: stored,
) -> list[SessionInfo]:
    """Async :func:`list_sessions`, through redis.asyncio."""
    keys = await reader.acurrent_keys()
    client = reader.async_client()
    try:
        ids = _ids(await client.zrevrange(keys.user_sessions(user_id), 0, -1))
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        _queue_meta(pipe, keys, ids)
        replies = await pipe.execute()
    except redis.RedisError as exc:
        raise ReadModelError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
    return _newest_first(_sessions_of(user_id, ids, replies, shown_as))


def session_infos(
    reader: ReadModelReader,
    user_id: str,
    session_ids: list[str],
    *,
    shown_as: Callable[[str], str | None] = lambda stored: stored,
) -> list[SessionInfo]:
    """The sessions among stored ``session_ids`` that exist and ``user_id`` owns, in order.

    One pipeline reads every session's meta; ``shown_as`` as in :func:`list_sessions`.

    Raises:
        ReadModelError: Redis could not be read.
    """
    if not session_ids:
        return []
    keys = reader.current_keys()
    try:
        pipe = reader.client.pipeline(transaction=False)
        _queue_meta(pipe, keys, session_ids)
        replies = pipe.execute()
    except redis.RedisError as exc:
        raise ReadModelError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
    return _sessions_of(user_id, session_ids, replies, shown_as)


_LISTED_FIELDS = [
    META_OWNER, META_COUNT, META_CREATED, META_UPDATED, META_DELETED, META_TTL, META_EXPIRED
]


def _ids(members: list[Any]) -> list[str]:
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


def _queue_meta(pipe: Any, keys: ReadModelKeys, ids: list[str]) -> None:
    for session_id in ids:
        pipe.hmget(keys.meta(session_id), _LISTED_FIELDS)
        pipe.pexpiretime(keys.meta(session_id))


def _sessions_of(
    user_id: str,
    ids: list[str],
    replies: list[Any],
    shown_as: Callable[[str], str | None],
) -> list[SessionInfo]:
    """The listed sessions ``user_id`` really owns, from the replies :func:`_queue_meta` asked."""
    sessions = []
    for index, stored_id in enumerate(ids):
        (owner, count, created, updated, deleted, ttl, expired) = replies[2 * index]
        expires = int(replies[2 * index + 1])
        if owner is None or owner.decode() != user_id or deleted is not None or expired:
            continue
        shown = shown_as(stored_id)
        if shown is None:
            continue
        sessions.append(
            SessionInfo(
                session_id=shown,
                user_id=user_id,
                message_count=int(count or 0),
                created_at=_time(created),
                updated_at=_time(updated),
                expires_at=_time(str(expires).encode()) if expires > 0 else None,
                ttl_ms=int(ttl) if ttl is not None else None,
            )
        )
    return sessions


def _newest_first(sessions: list[SessionInfo]) -> list[SessionInfo]:
    sessions.sort(key=lambda s: (s.updated_at or _EPOCH, s.session_id), reverse=True)
    return sessions


class SessionPosition(NamedTuple):
    """A session's tracking position: its last applied event (``-1``/``None``: nothing)."""

    partition: int | None
    offset: int


def _position(reply: list[Any]) -> SessionPosition:
    partition, offset = reply
    return SessionPosition(
        int(partition) if partition is not None else None,
        int(offset) if offset is not None else -1,
    )


def session_positions(reader: ReadModelReader, ids: list[str]) -> list[SessionPosition]:
    """The tracking position of each of ``ids``, in one round trip.

    Raises:
        ReadModelError: Redis could not be read.
    """
    keys = reader.current_keys()
    pipe = reader.client.pipeline(transaction=False)
    for session_id in ids:
        pipe.hmget(keys.meta(session_id), [META_PARTITION, META_OFFSET])
    cluster = is_cluster(reader.client)
    if cluster:
        pipe.hgetall(keys.positions())
    try:
        return _positions(pipe.execute(), cluster=cluster)
    except redis.RedisError as exc:
        raise ReadModelError(f"reading session positions failed: {exc}") from exc


async def asession_positions(reader: ReadModelReader, ids: list[str]) -> list[SessionPosition]:
    """Async :func:`session_positions`."""
    keys = await reader.acurrent_keys()
    client = reader.async_client()
    pipe = client.pipeline(transaction=False)
    for session_id in ids:
        pipe.hmget(keys.meta(session_id), [META_PARTITION, META_OFFSET])
    cluster = is_cluster(client)
    if cluster:
        pipe.hgetall(keys.positions())
    try:
        return _positions(await pipe.execute(), cluster=cluster)
    except redis.RedisError as exc:
        raise ReadModelError(f"reading session positions failed: {exc}") from exc


def _positions(replies: list[Any], *, cluster: bool) -> list[SessionPosition]:
    """The sessions' positions; on a cluster, only as far as the user index has them too.

    On a Redis Cluster the user index is written after the sessions' own keys
    (:mod:`chatlog.projector.cluster_projection`), and the namespace position
    of a partition advances after both: an event counts as applied for a
    listing once that position passed it.
    """
    if not cluster:
        return [_position(reply) for reply in replies]
    done = {int(p): int(o) for p, o in replies[-1].items()}
    found = []
    for reply in replies[:-1]:
        position = _position(reply)
        if position.partition in done:
            below = done[position.partition] - 1
            position = SessionPosition(position.partition, min(position.offset, below))
        found.append(position)
    return found


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
    return _owner(owner, expired)


def start_owner_read(reader: ReadModelReader, session_id: str) -> Callable[[], str | None]:
    """Send the read of :func:`session_owner` now; the returned call reads its reply.

    A write encodes its events between the two, so the Redis round trip runs
    meanwhile instead of before them (a tenth of an ``add_messages`` of ten
    messages, measured). A Redis Cluster or single-connection client, or a
    request that could not be sent, reads at the call instead, as
    :func:`session_owner` does. The returned call must be made exactly once:
    until then a pool connection is held.

    Raises (the returned call):
        ReadModelError: Redis could not be read.
    """
    client = reader.client
    if is_cluster(client) or not isinstance(client, redis.Redis) or client.connection is not None:
        return partial(session_owner, reader, session_id)
    keys = reader.current_keys()
    pool = client.connection_pool
    # redis-py's connection-level calls are untyped.
    connection: Any = pool.get_connection()
    parse: Any = client.parse_response
    try:
        connection.send_command("HMGET", keys.meta(session_id), META_OWNER, META_EXPIRED)
    except (redis.RedisError, OSError):
        # session_owner retries it as any command is retried, and types its failure.
        connection.disconnect()
        pool.release(connection)
        return partial(session_owner, reader, session_id)

    def reply() -> str | None:
        try:
            owner, expired = parse(connection, "HMGET")
        except (redis.RedisError, OSError) as exc:
            connection.disconnect()  # its reply may be half read: never reuse it
            raise ReadModelError(
                f"reading the owner of session {session_id!r} failed: {exc}"
            ) from exc
        finally:
            pool.release(connection)
        return _owner(owner, expired)

    return reply


def _owner(owner: bytes | str | None, expired: bytes | str | None) -> str | None:
    if expired is not None:
        return None  # idle-expired: the next writer starts it afresh
    return owner.decode() if isinstance(owner, bytes) else owner


async def asession_owner(reader: ReadModelReader, session_id: str) -> str | None:
    """Async :func:`session_owner`, through redis.asyncio.

    Raises:
        ReadModelError: Redis could not be read.
    """
    keys = await reader.acurrent_keys()
    try:
        owner, expired = await reader.async_client().hmget(
            keys.meta(session_id), [META_OWNER, META_EXPIRED]
        )
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
