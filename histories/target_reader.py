"""``ChatLog`` reads from a SQL or DynamoDB read model (``CHATLOG_READ_MODEL=URL``).

The readers return the same :class:`~chatlog.histories.read_model.SessionSnapshot`
as the Redis reader (tracking position, owner, messages), so read-your-writes,
ownership checks, ``last(n)`` and ``ChatLog.sessions`` work unchanged. They
read the layout of :mod:`chatlog.target_layout`, which the projector's
targets write; an idle-expired session reads as empty, as in Redis.

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
from chatlog.histories.read_model import SessionSnapshot
from chatlog.histories.sessions import SessionInfo
from chatlog.target_layout import (
    DYNAMODB_HISTORY,
    DYNAMODB_KEY,
    DYNAMODB_META,
    MESSAGE_TABLE,
    STATE_OFFSET,
    STATE_PARTITION,
    STATE_TTL,
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

    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
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
    live = not expiry or expiry > _now_ms()
    return SessionSnapshot(
        offset=int(loaded[STATE_OFFSET]),
        partition=int(loaded[STATE_PARTITION]),
        owner=owner or None,
        messages=messages if live else [],
    )


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

    async def aread(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """Async :meth:`read` (in a worker thread)."""
        return await asyncio.to_thread(self.read, session_id, limit=limit)

    def close(self) -> None:
        """Release connections."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()


class SqlSessionReader(_ThreadedAsync):
    """Reads sessions from a SQL read model (``sqlite:///PATH``, ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy as sa
        except ImportError as exc:
            raise TargetError("reading SQL needs SQLAlchemy: pip install 'chatlog[postgres]'") \
                from exc
        self._sa = sa
        parsed = sa.make_url(url)
        table = parsed.query.get("table", MESSAGE_TABLE)
        parsed = parsed.difference_update_query(["table"])
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.engine = sa.create_engine(parsed)
        names = sql_tables(str(table))
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
        sa = self._sa
        m, s = self.messages, self.sessions
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(s.c.state, s.c.owner, s.c.expires_at)
                    .where(s.c.session_id == session_id)
                ).first()
                query = sa.select(m.c.message).where(m.c.session_id == session_id)
                if limit is None:
                    rows = [r[0] for r in conn.execute(query.order_by(m.c.id))]
                else:
                    newest = conn.execute(query.order_by(m.c.id.desc()).limit(limit))
                    rows = [r[0] for r in newest][::-1]
        except sa.exc.SQLAlchemyError as exc:
            raise TargetError(f"reading session {session_id!r} failed: {exc}") from exc
        if row is None:
            return _snapshot(None, "", 0, [])
        return _snapshot(row[0], row[1], row[2], [text.encode("utf-8") for text in rows])

    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
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
                    .order_by(u.c.last_ms.desc(), u.c.session_id.desc())
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            raise TargetError(f"listing the sessions of user {user_id!r} failed: {exc}") from exc
        return [_info(sid, user_id, count, last, expiry, state)
                for sid, last, count, expiry, state in rows]

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


class DynamoDbSessionReader(_ThreadedAsync):
    """Reads sessions from a DynamoDB read model (``dynamodb://TABLE?region=&endpoint_url=``)."""

    def __init__(self, url: str) -> None:
        try:
            import boto3
            from boto3.dynamodb.types import TypeDeserializer
        except ImportError as exc:
            raise TargetError("reading DynamoDB needs boto3: pip install 'chatlog[dynamodb]'") \
                from exc
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.table = parts.netloc + parts.path.rstrip("/")
        self.meta_table = dynamodb_meta_table(self.table)
        self.client = boto3.client(
            "dynamodb", region_name=options.get("region"), endpoint_url=options.get("endpoint_url")
        )
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

    def read(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """The session as stored (messages as ``message_to_dict`` JSON)."""
        meta = self._meta(session_id)
        if meta is None:
            return _snapshot(None, "", 0, [])
        item = self._get(self.table, {DYNAMODB_KEY: session_id}) or {}
        history = item.get(DYNAMODB_HISTORY, {}).get("L", [])
        if limit is not None:
            history = history[-limit:] if limit > 0 else []
        plain = (from_dynamodb_value(self._deserialize(m)) for m in history)
        messages = [json.dumps(m, ensure_ascii=False).encode("utf-8") for m in plain]
        return _snapshot(meta["state"]["S"], meta["owner"]["S"], int(meta["expires_at"]["N"]),
                         messages)

    def list_sessions(self, user_id: str) -> list[SessionInfo]:
        """The user's live sessions, newest activity first."""
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
        now = _now_ms()
        found = []
        for sid, last in rows:
            meta = self._meta(sid)
            if meta is None or meta["owner"]["S"] != user_id:
                continue
            expiry = int(meta["expires_at"]["N"])
            if expiry and expiry <= now:
                continue
            found.append(_info(sid, user_id, int(meta["count"]["N"]), last, expiry,
                               meta["state"]["S"]))
        found.sort(key=lambda info: (info.updated_at or _time(1), info.session_id), reverse=True)
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
