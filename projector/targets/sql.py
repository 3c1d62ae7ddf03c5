"""The SQL target: the read model in SQLite or PostgreSQL, through SQLAlchemy.

Messages go in langchain-community's ``SQLChatMessageHistory`` layout, the
``message_store`` table (``id`` integer key in insertion order, ``session_id``,
``message`` as ``message_to_dict`` JSON, which is chatlog's stored form), so
``SQLChatMessageHistory(session_id, connection=URL)`` reads what chatlog
projected. chatlog's own state lives beside it in tables it creates:

* ``chatlog_sessions``: per session the fold's state (owner, partition, last
  applied offset, TTL, last event time, the verdicts of recent conditional
  appends) as JSON, the message count (the session's version) and the
  expiry (event time + idle TTL, 0 for never) that readers filter on;
* ``chatlog_user_sessions``: each user's session index (last activity);
* ``chatlog_positions``: each partition's next offset to apply.

One batch is one transaction: the touched sessions' rows are read (locked
``FOR UPDATE`` on PostgreSQL), folded with verify's rules
(:mod:`~chatlog.projector.targets.session_fold`), and written back together
with the positions, so the positions never run ahead of the data.

What SQL cannot do cheaply: idle expiry. chatlog's readers filter expired
sessions by ``expires_at``; LangChain's reader does not, so an expired
session's rows stay visible to it until :meth:`SqlTarget.sweep` deletes them
(``chatlog replay sweep --target URL``, e.g. from cron).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from chatlog.errors import TargetError
from chatlog.projector.changes import Change
from chatlog.projector.checkpoint_projection import CheckpointApplyResult, CheckpointRecord
from chatlog.projector.protocol import OP_DELETE_USER
from chatlog.projector.redis_projection import ApplyResult
from chatlog.projector.targets.checkpoint_fold import ThreadState
from chatlog.projector.targets.session_fold import (
    Verdicts,
    expires_at,
    fold_batch,
    loaded_placeholders,
    session_from,
    state_json,
    stored_verdicts,
)
from chatlog.projector.verify import ExpectedSession
from chatlog.target_layout import MESSAGE_TABLE, sql_tables

try:
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    from chatlog.projector.targets.sql_checkpoints import SqlCheckpointStore, checkpoint_tables
    from chatlog.projector.targets.sql_positions import advance_positions
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise TargetError(
        "the SQL target needs SQLAlchemy: pip install 'chatlog[postgres]'"
    ) from exc

#: Rows per ``IN (...)`` list (SQLite allows 32766 bound parameters; keep it small).
_CHUNK = 500


def engine_url(url: str) -> tuple[sa.URL, str]:
    """The SQLAlchemy URL to connect with and the messages table (``?table=``) of ``url``.

    ``postgresql://`` gets the psycopg (3) driver that ``chatlog[postgres]``
    installs; a URL that names a driver keeps it.
    """
    try:
        parsed = sa.make_url(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise TargetError(f"not a SQLAlchemy URL: {exc}") from exc
    table = parsed.query.get("table", MESSAGE_TABLE)
    if not isinstance(table, str):
        raise TargetError("give ?table= once")
    parsed = parsed.difference_update_query(["table"])
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed, table


def _tables(metadata: sa.MetaData, message_table: str) -> tuple[sa.Table, ...]:
    names = sql_tables(message_table)
    messages = sa.Table(
        message_table,
        metadata,
        # LangChain's own model: Column(Integer, primary_key=True), session_id and message Text.
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Text),
        sa.Column("message", sa.Text),
        sa.Index(f"ix_{message_table}_session_id", "session_id"),
    )
    sessions = sa.Table(
        names.sessions,
        metadata,
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    users = sa.Table(
        names.user_sessions,
        metadata,
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Index(f"ix_{names.user_sessions}_session_id", "session_id"),
    )
    positions = sa.Table(
        names.positions,
        metadata,
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    return messages, sessions, users, positions


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


class SqlTarget:
    """The read model in a SQL database (SQLite file or PostgreSQL), LangChain-readable.

    Args:
        url: A SQLAlchemy URL (``sqlite:///PATH``, ``postgresql://...``,
            ``postgresql+psycopg://...``), optionally with ``?table=NAME`` for the
            messages table (default ``message_store``).
        session_ttl_s: The deployment's idle TTL (``Settings.session_ttl_s``).
    """

    def __init__(self, url: str, *, session_ttl_s: float | None = None) -> None:
        connect_url, table = engine_url(url)
        self.url = connect_url.render_as_string(hide_password=True)
        self.default_ttl_ms = int(session_ttl_s * 1000) if session_ttl_s else 0
        self.metadata = sa.MetaData()
        self.messages, self.sessions, self.users, self.positions_table = _tables(
            self.metadata, table
        )
        checkpoints = checkpoint_tables(self.metadata, table)
        try:
            self.engine = sa.create_engine(connect_url)
            self._lock = self.engine.dialect.name == "postgresql"
            self.metadata.create_all(self.engine)
            self.checkpoints = SqlCheckpointStore(self.engine, checkpoints, lock=self._lock)
        except (SQLAlchemyError, ImportError) as exc:
            raise TargetError(f"opening SQL target {self.url} failed: {exc}") from exc

    # -- apply ---------------------------------------------------------------

    def apply(self, changes: Sequence[Change], *, advance: Mapping[int, int]) -> ApplyResult:
        """Apply ``changes`` and record ``advance`` in one transaction (see the protocol)."""
        try:
            with self.engine.begin() as conn:
                result = self._apply(conn, changes)
                advance_positions(conn, self.positions_table, advance, lock=self._lock)
        except SQLAlchemyError as exc:
            raise TargetError(
                f"applying a batch to {self.url} failed: {exc}; applying it again is safe"
            ) from exc
        return result

    def _apply(self, conn: sa.Connection, changes: Sequence[Change]) -> ApplyResult:
        if not changes:
            return ApplyResult()
        touched = sorted({c.session_id for c in changes if c.op != OP_DELETE_USER})
        deleted_users = sorted({c.user_id for c in changes if c.op == OP_DELETE_USER and c.user_id})
        loaded: dict[str, ExpectedSession] = {}
        verdicts: dict[str, Verdicts] = {}
        index: dict[str, dict[str, int]] = {}
        s, u, m = self.sessions, self.users, self.messages
        for chunk in _chunks(touched):
            query = sa.select(s.c.session_id, s.c.state, s.c.count).where(s.c.session_id.in_(chunk))
            if self._lock:
                query = query.with_for_update()
            for sid, state, count in conn.execute(query):
                loaded[sid] = session_from(state, loaded_placeholders(count))
                verdicts[sid] = stored_verdicts(state)
            rows = conn.execute(sa.select(u.c.user_id, u.c.session_id, u.c.last_ms)
                                .where(u.c.session_id.in_(chunk)))
            for user, sid, at in rows:
                index.setdefault(user, {})[sid] = at
        for chunk in _chunks(deleted_users):
            rows = conn.execute(sa.select(u.c.user_id, u.c.session_id, u.c.last_ms)
                                .where(u.c.user_id.in_(chunk)))
            for user, sid, at in rows:
                index.setdefault(user, {})[sid] = at
        outcome = fold_batch(
            changes, loaded, index, default_ttl_ms=self.default_ttl_ms, verdicts=verdicts
        )
        rewritten: list[str] = []
        inserts: list[dict[str, str]] = []
        session_rows: list[dict[str, Any]] = []
        for sid, done in outcome.sessions.items():
            tail = done.appended
            if tail is None:
                rewritten.append(sid)
                tail = done.messages
            inserts += ({"session_id": sid, "message": text} for text in tail)
            session = done.session
            session_rows.append({
                "session_id": sid,
                "state": state_json(session, done.verdicts),
                "count": len(session.messages),
                "owner": session.owner,
                "expires_at": expires_at(session, self.default_ttl_ms),
            })
        for chunk in _chunks(rewritten):
            conn.execute(sa.delete(m).where(m.c.session_id.in_(chunk)))
        if inserts:
            conn.execute(sa.insert(m), inserts)
        written = [row["session_id"] for row in session_rows]
        for chunk in _chunks(written):
            conn.execute(sa.delete(s).where(s.c.session_id.in_(chunk)))
        if session_rows:
            conn.execute(sa.insert(s), session_rows)
        gone = sorted(outcome.unlisted | set(outcome.listed))
        for user, sid in gone:
            conn.execute(sa.delete(u).where(u.c.user_id == user, u.c.session_id == sid))
        if outcome.listed:
            conn.execute(sa.insert(u), [
                {"user_id": user, "session_id": sid, "last_ms": at}
                for (user, sid), at in outcome.listed.items()
            ])
        return outcome.result

    def apply_checkpoints(
        self, records: Sequence[CheckpointRecord], *, advance: Mapping[int, int]
    ) -> CheckpointApplyResult:
        """Apply checkpoint records and the checkpoint topic's ``advance`` in one transaction."""
        return self.checkpoints.apply(records, advance=advance)

    def checkpoint_positions(self) -> dict[int, int]:
        """The checkpoint topic's next offset to apply, per partition."""
        return self.checkpoints.positions()

    def checkpoint_thread_ids(self) -> list[str]:
        """Every thread with a row in ``chatlog_threads``."""
        return self.checkpoints.thread_ids()

    def checkpoint_state(self, thread_id: str) -> ThreadState | None:
        """The thread's stored row and items, for verify."""
        return self.checkpoints.state(thread_id)

    def replace_session(
        self, session_id: str, changes: Sequence[Change], *, through: int
    ) -> bool:
        """Rebuild ``session_id`` from ``changes`` in one transaction (see the protocol).

        The session's rows go and the changes are applied to nothing, with the
        same apply as every batch, so the rebuilt rows are what a rebuild of
        the whole store would write. The session row is locked first (FOR
        UPDATE on PostgreSQL, the write lock on SQLite), so a live projector
        waits rather than interleaves.
        """
        s, u, m = self.sessions, self.users, self.messages
        own = [c for c in changes if c.session_id == session_id and c.op != OP_DELETE_USER]
        try:
            with self.engine.begin() as conn:
                query = sa.select(s.c.state).where(s.c.session_id == session_id)
                if self._lock:
                    query = query.with_for_update()
                else:
                    # SQLite has no FOR UPDATE, and pysqlite begins the transaction
                    # at the first write: a no-op write takes the database's write
                    # lock before the read, so no projector commits in between.
                    conn.execute(
                        sa.update(s).where(s.c.session_id == session_id).values(count=s.c.count)
                    )
                row = conn.execute(query).first()
                if row is not None and session_from(row[0], []).offset > through:
                    return False
                conn.execute(sa.delete(m).where(m.c.session_id == session_id))
                conn.execute(sa.delete(s).where(s.c.session_id == session_id))
                conn.execute(sa.delete(u).where(u.c.session_id == session_id))
                self._apply(conn, own)
        except SQLAlchemyError as exc:
            raise TargetError(f"rebuilding session {session_id!r} in {self.url} failed: {exc}") \
                from exc
        return True

    # -- reads ---------------------------------------------------------------

    def positions(self) -> dict[int, int]:
        """Every recorded partition's next offset to apply."""
        p = self.positions_table
        rows = self._read(sa.select(p.c.partition, p.c.next_offset))
        return {int(part): int(off) for part, off in rows}

    def read_session(self, session_id: str, *, now_ms: int | None = None) -> list[str]:
        """The session's stored messages; ``[]`` when expired or absent."""
        s, m = self.sessions, self.messages
        expiry = self._read(sa.select(s.c.expires_at).where(s.c.session_id == session_id))
        if expiry and expiry[0][0] and expiry[0][0] <= _now(now_ms):
            return []
        rows = self._read(
            sa.select(m.c.message).where(m.c.session_id == session_id).order_by(m.c.id)
        )
        return [row[0] for row in rows]

    def stored_form(self, text: str) -> str:
        """Messages are stored as the log's text, unchanged."""
        return text

    def user_sessions(self, user_id: str, *, now_ms: int | None = None) -> dict[str, int]:
        """The user's sessions that are not expired: session id -> last activity."""
        s, u = self.sessions, self.users
        now = _now(now_ms)
        rows = self._read(
            sa.select(u.c.session_id, u.c.last_ms)
            .join(s, s.c.session_id == u.c.session_id, isouter=True)
            .where(u.c.user_id == user_id)
            .where(sa.or_(s.c.expires_at.is_(None), s.c.expires_at == 0, s.c.expires_at > now))
        )
        return {sid: int(at) for sid, at in rows}

    def scan_sessions(self) -> Iterator[str]:
        """Every session id with state or messages (a message row without state is drift)."""
        s, m = self.sessions, self.messages
        rows = self._read(sa.union(sa.select(s.c.session_id), sa.select(m.c.session_id)))
        return iter(sorted(row[0] for row in rows))

    def sweep(self, *, now_ms: int | None = None) -> int:
        """Delete the message rows of idle-expired sessions; return how many sessions.

        chatlog's readers already hide them; this makes LangChain's reader (and
        the disk) agree. The sessions' state rows stay, as the fold keeps them.
        """
        s, m = self.sessions, self.messages
        now = _now(now_ms)
        try:
            with self.engine.begin() as conn:
                expired = [r[0] for r in conn.execute(
                    sa.select(s.c.session_id)
                    .where(s.c.expires_at > 0, s.c.expires_at <= now, s.c.count > 0)
                )]
                for chunk in _chunks(expired):
                    conn.execute(sa.delete(m).where(m.c.session_id.in_(chunk)))
                    # The count follows the rows, as Redis' expired keys take theirs.
                    conn.execute(sa.update(s).where(s.c.session_id.in_(chunk)).values(count=0))
        except SQLAlchemyError as exc:
            raise TargetError(f"sweeping {self.url} failed: {exc}") from exc
        return len(expired)

    def drop(self) -> None:
        """Drop chatlog's tables and the messages table."""
        try:
            self.metadata.drop_all(self.engine)
        except SQLAlchemyError as exc:
            raise TargetError(f"dropping the tables of {self.url} failed: {exc}") from exc

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def _read(self, query: Any) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(query))
        except SQLAlchemyError as exc:
            raise TargetError(f"reading {self.url} failed: {exc}") from exc
