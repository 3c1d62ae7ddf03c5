"""``ChatLog`` reads from a SQL or DynamoDB read model (``CHATLOG_READ_MODEL=URL``).

The readers return the same :class:`~chatlog.histories.read_model.SessionSnapshot`
and :class:`~chatlog.histories.read_model.SessionVersion` as the Redis reader
(tracking position, owner, messages; message count and the verdict of a
conditional append), so read-your-writes, ownership checks, ``last(n)``,
paged reads, ``version``/``expected_version`` and ``ChatLog.sessions``
(paged too) work unchanged. They read the layout of
:mod:`chatlog.target_layout`, which the projector's targets write; an
idle-expired session reads as empty, as in Redis.

Reads never refresh a session's idle TTL (``session_ttl_refresh_on_read``
is Redis only): the SQL and DynamoDB expiry moves with events alone.

Async reads run the sync read in a worker thread (SQLAlchemy's and boto3's
sync clients; the stores' round trip dominates).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from chatlog.errors import ConfigurationError, TargetError
from chatlog.histories.read_model import SessionSnapshot, SessionVersion
from chatlog.histories.session_pages import SessionPage, decode_cursor, encode_cursor
from chatlog.histories.sessions import SessionInfo
from chatlog.target_layout import (
    DYNAMODB_HISTORY,
    DYNAMODB_KEY,
    DYNAMODB_META,
    MESSAGE_TABLE,
    STATE_OFFSET,
    STATE_PARTITION,
    STATE_TTL,
    STATE_VERDICTS,
    dynamodb_meta_table,
    dynamodb_session_pk,
    dynamodb_user_pk,
    from_dynamodb_value,
    sql_tables,
)


class TargetSessionReader(Protocol):
    """What ``ChatLog`` needs of a non-Redis read model."""

    def read(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """The session's tracking position, owner and last ``limit`` (or all) messages."""
        ...

    async def aread(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """Async :meth:`read`."""
        ...

    def read_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Up to ``limit`` messages before position ``before`` (default: the end), and ``start``."""
        ...

    async def aread_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Async :meth:`read_window`."""
        ...

    def version(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """The session's version (message count), and the verdict at offset ``verdict_of``."""
        ...

    async def aversion(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """Async :meth:`version`."""
        ...

    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
        ...

    def sessions_page(self, user_id: str, *, limit: int, cursor: str | None = None) -> SessionPage:
        """Up to ``limit`` of the user's live sessions after ``cursor`` (newest first)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def _time(ms: int | None) -> datetime | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _snapshot(state: str | None, owner: str, expiry: int, messages: list[bytes]) -> SessionSnapshot:
    if state is None:
        return SessionSnapshot(-1, None, None, [])
    loaded = json.loads(state)
    live = _live(expiry)
    return SessionSnapshot(
        offset=int(loaded[STATE_OFFSET]),
        partition=int(loaded[STATE_PARTITION]),
        owner=owner or None,
        messages=messages if live else [],
    )


def _live(expiry: int) -> bool:
    return not expiry or expiry > _now_ms()


def _version(state: str | None, owner: str, expiry: int, count: int, verdict_of: int
             ) -> SessionVersion:
    if state is None:
        return SessionVersion(-1, None, None, 0, None)
    loaded = json.loads(state)
    entry = (loaded.get(STATE_VERDICTS) or {}).get(str(verdict_of))
    live = _live(expiry)
    return SessionVersion(
        offset=int(loaded[STATE_OFFSET]),
        partition=int(loaded[STATE_PARTITION]),
        # Idle-expired: no owner and no messages, as the Redis reader answers.
        owner=(owner or None) if live else None,
        version=count if live else 0,
        verdict=None if entry is None else str(entry[0]),
    )


def _window(limit: int | None, before: int | None, length: int) -> tuple[int, int]:
    """The ``[start, stop)`` positions of a window read over ``length`` messages."""
    if before is None:
        return (0 if limit is None else max(length - limit, 0)), length
    stop = min(before, length)
    return (0 if limit is None else max(before - limit, 0)), stop


def _window_start(limit: int | None, before: int | None, length: int, served: int) -> int:
    """``SessionSnapshot.start`` of a window, as the Redis reader computes it."""
    if before is None:
        return length - served
    return 0 if limit is None else max(before - limit, 0)


def _ordered(listed: list[tuple[int, SessionInfo]]) -> list[tuple[float, bytes, SessionInfo]]:
    """``listed`` newest first: by last activity, then session id bytes, both descending."""
    return sorted(
        ((float(ms), info.session_id.encode("utf-8"), info) for ms, info in listed),
        key=lambda entry: (entry[0], entry[1]),
        reverse=True,
    )


def _page(
    listed: list[tuple[int, SessionInfo]], *, limit: int, cursor: str | None
) -> SessionPage:
    """One page of ``listed`` (last activity ms, session) after ``cursor``, newest first.

    Ordered and cut like the Redis index (score, then member bytes, both
    descending), with the same cursor form, so a cursor names a position
    that later writes cannot make a page repeat.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    position = decode_cursor(cursor) if cursor is not None else None
    ordered = _ordered(listed)
    after = [e for e in ordered if position is None or (e[0], e[1]) < position]
    shown = after[:limit]
    more = len(after) > limit
    next_cursor = encode_cursor((shown[-1][0], shown[-1][1])) if more and shown else None
    return SessionPage([info for _, _, info in shown], next_cursor)


def _info(session_id: str, user_id: str, count: int, last_ms: int, expiry: int, state: str
          ) -> SessionInfo:
    ttl = json.loads(state).get(STATE_TTL)
    return SessionInfo(
        session_id=session_id,
        user_id=user_id,
        message_count=count,
        # The fold keeps no creation time; Redis does (META_CREATED).
        created_at=None,
        updated_at=_time(last_ms),
        expires_at=_time(expiry),
        ttl_ms=None if ttl is None else int(ttl),
    )


class _ThreadedAsync:
    def read(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        raise NotImplementedError

    def read_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        raise NotImplementedError

    def version(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        raise NotImplementedError

    def _listed(self, user_id: str) -> list[tuple[int, SessionInfo]]:
        raise NotImplementedError

    async def aread(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """Async :meth:`read` (in a worker thread)."""
        return await asyncio.to_thread(self.read, session_id, limit=limit)

    async def aread_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Async :meth:`read_window` (in a worker thread)."""
        return await asyncio.to_thread(self.read_window, session_id, limit=limit, before=before)

    async def aversion(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """Async :meth:`version` (in a worker thread)."""
        return await asyncio.to_thread(self.version, session_id, verdict_of=verdict_of)

    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
        return [info for _, _, info in _ordered(self._listed(user_id))]

    def sessions_page(self, user_id: str, *, limit: int, cursor: str | None = None) -> SessionPage:
        """Up to ``limit`` of the user's live sessions after ``cursor``, newest first.

        Raises:
            ValueError: ``limit`` is not positive.
            InvalidCursorError: ``cursor`` is not one a page handed out.
        """
        return _page(self._listed(user_id), limit=limit, cursor=cursor)

    def close(self) -> None:
        """Release connections."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()


def sql_engine(url: str) -> tuple[Any, Any, str]:
    """SQLAlchemy (the module), an engine for ``url`` and its messages table (``?table=``).

    ``postgresql://`` gets the psycopg (3) driver that ``chatlog[postgres]`` installs.

    Raises:
        TargetError: SQLAlchemy is not installed.
    """
    try:
        import sqlalchemy as sa
    except ImportError as exc:
        raise TargetError("reading SQL needs SQLAlchemy: pip install 'chatlog[postgres]'") \
            from exc
    parsed = sa.make_url(url)
    table = parsed.query.get("table", MESSAGE_TABLE)
    parsed = parsed.difference_update_query(["table"])
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa, sa.create_engine(parsed), str(table)


class SqlSessionReader(_ThreadedAsync):
    """Reads sessions from a SQL read model (``sqlite:///PATH``, ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        sa, self.engine, table = sql_engine(url)
        self._sa = sa
        names = sql_tables(table)
        # Plain table clauses, no reflection: the projector may create the tables later.
        self.messages = sa.table(names.messages, *map(sa.column, ("id", "session_id", "message")))
        self.sessions = sa.table(
            names.sessions, *map(sa.column, ("session_id", "state", "count", "owner", "expires_at"))
        )
        self.users = sa.table(
            names.user_sessions, *map(sa.column, ("user_id", "session_id", "last_ms"))
        )

    def read(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """The session as stored, newest ``limit`` messages (or all)."""
        return self.read_window(session_id, limit=limit, before=None)._replace(start=0)

    def read_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Up to ``limit`` messages before position ``before`` (default: the end), and ``start``.

        The window and the session's length come from one statement (a window
        ``COUNT``), so ``start`` matches the messages served.
        """
        sa = self._sa
        m, s = self.messages, self.sessions
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(s.c.state, s.c.owner, s.c.expires_at)
                    .where(s.c.session_id == session_id)
                ).first()
                query = sa.select(m.c.message, sa.func.count().over()).where(
                    m.c.session_id == session_id
                )
                if before is None:
                    newest = query.order_by(m.c.id.desc())
                    if limit is not None:
                        newest = newest.limit(limit)
                    rows = conn.execute(newest).all()[::-1]
                elif before <= 0:
                    rows = []
                else:
                    first = 0 if limit is None else max(before - limit, 0)
                    ranged = query.order_by(m.c.id).offset(first).limit(before - first)
                    rows = conn.execute(ranged).all()
        except sa.exc.SQLAlchemyError as exc:
            raise TargetError(f"reading session {session_id!r} failed: {exc}") from exc
        if row is None:
            return _snapshot(None, "", 0, [])
        snapshot = _snapshot(row[0], row[1], row[2], [r[0].encode("utf-8") for r in rows])
        length = int(rows[0][1]) if rows and snapshot.messages else 0
        return snapshot._replace(
            start=_window_start(limit, before, length, len(snapshot.messages))
        )

    def version(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """The session's version (message count), and the verdict at offset ``verdict_of``.

        One row holds both: the projector writes them in one transaction.
        """
        sa = self._sa
        s = self.sessions
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(s.c.state, s.c.owner, s.c.expires_at, s.c.count)
                    .where(s.c.session_id == session_id)
                ).first()
        except sa.exc.SQLAlchemyError as exc:
            raise TargetError(f"reading session {session_id!r} failed: {exc}") from exc
        if row is None:
            return _version(None, "", 0, 0, verdict_of)
        return _version(row[0], row[1], int(row[2]), int(row[3]), verdict_of)

    def _listed(self, user_id: str) -> list[tuple[int, SessionInfo]]:
        sa = self._sa
        s, u = self.sessions, self.users
        now = _now_ms()
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(u.c.session_id, u.c.last_ms, s.c.count, s.c.expires_at, s.c.state)
                    .join(s, s.c.session_id == u.c.session_id)
                    .where(u.c.user_id == user_id, s.c.owner == user_id)
                    .where(sa.or_(s.c.expires_at == 0, s.c.expires_at > now))
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            raise TargetError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
        return [(int(last), _info(sid, user_id, count, last, expiry, state))
                for sid, last, count, expiry, state in rows]

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def dynamodb_client(url: str) -> tuple[Any, str]:
    """A boto3 DynamoDB client for ``dynamodb://TABLE?region=&endpoint_url=``, and ``TABLE``.

    Raises:
        TargetError: boto3 is not installed.
    """
    try:
        import boto3
    except ImportError as exc:
        raise TargetError("reading DynamoDB needs boto3: pip install 'chatlog[dynamodb]'") \
            from exc
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    client = boto3.client(
        "dynamodb", region_name=options.get("region"), endpoint_url=options.get("endpoint_url")
    )
    return client, parts.netloc + parts.path.rstrip("/")


class DynamoDbSessionReader(_ThreadedAsync):
    """Reads sessions from a DynamoDB read model (``dynamodb://TABLE?region=&endpoint_url=``)."""

    def __init__(self, url: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer

        self.client, self.table = dynamodb_client(url)
        self.meta_table = dynamodb_meta_table(self.table)
        self._deserialize = TypeDeserializer().deserialize

    def _get(self, table: str, key: dict[str, str]) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.client.get_item(
                TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(f"reading {table} failed: {exc}") from exc
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def _meta(self, session_id: str) -> dict[str, Any] | None:
        return self._get(self.meta_table, {"pk": dynamodb_session_pk(session_id),
                                           "sk": DYNAMODB_META})

    def _history(self, session_id: str) -> list[Any]:
        item = self._get(self.table, {DYNAMODB_KEY: session_id}) or {}
        history: list[Any] = item.get(DYNAMODB_HISTORY, {}).get("L", [])
        return history

    def _texts(self, history: list[Any]) -> list[bytes]:
        plain = (from_dynamodb_value(self._deserialize(m)) for m in history)
        return [json.dumps(m, ensure_ascii=False).encode("utf-8") for m in plain]

    def read(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """The session as stored (messages as ``message_to_dict`` JSON)."""
        return self.read_window(session_id, limit=limit, before=None)._replace(start=0)

    def read_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Up to ``limit`` messages before position ``before`` (default: the end), and ``start``.

        The session is one item, so the window is cut from one consistent read.
        """
        meta = self._meta(session_id)
        if meta is None:
            return _snapshot(None, "", 0, [])
        history = self._history(session_id)
        first, stop = _window(limit, before, len(history))
        snapshot = _snapshot(meta["state"]["S"], meta["owner"]["S"],
                             int(meta["expires_at"]["N"]), self._texts(history[first:stop]))
        length = len(history) if snapshot.messages else 0
        return snapshot._replace(
            start=_window_start(limit, before, length, len(snapshot.messages))
        )

    def version(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """The session's version (message count), and the verdict at offset ``verdict_of``.

        The meta item holds both: the projector writes them in one conditional write.
        """
        meta = self._meta(session_id)
        if meta is None:
            return _version(None, "", 0, 0, verdict_of)
        return _version(meta["state"]["S"], meta["owner"]["S"], int(meta["expires_at"]["N"]),
                        int(meta["count"]["N"]), verdict_of)

    def _listed(self, user_id: str) -> list[tuple[int, SessionInfo]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("query").paginate(
                TableName=self.meta_table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": dynamodb_user_pk(user_id)}},
                ConsistentRead=True,
            )
            rows = [(i["sk"]["S"], int(i["last_ms"]["N"])) for p in pages for i in p["Items"]]
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
        found = []
        for sid, last in rows:
            meta = self._meta(sid)
            if meta is None or meta["owner"]["S"] != user_id:
                continue
            expiry = int(meta["expires_at"]["N"])
            if not _live(expiry):
                continue
            found.append((last, _info(sid, user_id, int(meta["count"]["N"]), last, expiry,
                                      meta["state"]["S"])))
        return found

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


def open_session_reader(url: str) -> TargetSessionReader | None:
    """The reader of ``url`` (``CHATLOG_READ_MODEL``); ``None`` for Redis (the default reader).

    Raises:
        ConfigurationError: the URL names no store chatlog reads.
        TargetError: the store cannot be opened.
    """
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme in ("redis", "rediss"):
        return None
    if scheme in ("sqlite", "postgresql", "postgres"):
        return SqlSessionReader(url)
    if scheme == "dynamodb":
        return DynamoDbSessionReader(url)
    raise ConfigurationError(
        f"CHATLOG_READ_MODEL={scheme}://... is not a read model chatlog reads: use redis://, "
        "sqlite:///PATH, postgresql://... or dynamodb://TABLE"
    )
