"""The LangGraph saver's read model in SQL: checkpoint tables beside the message tables.

chatlog's own tables (:func:`~chatlog.target_layout.sql_checkpoint_tables`):

* ``chatlog_threads``: per thread its tracking position (partition, last
  applied offset), owner, TTL, expiry (event time, 0 for never), namespaces
  (JSON, by first appearance) and its score in the owner's thread index;
* ``chatlog_checkpoints``: one row per checkpoint (stored frame, version list,
  run id), ordered by ``checkpoint_id`` in byte order (``COLLATE "C"`` on
  PostgreSQL, like Redis' lex order);
* ``chatlog_checkpoint_blobs``, ``_writes``, ``_chunks``: channel values,
  pending writes and the parts of chunked events, keyed by the same
  NUL-joined fields as the Redis hashes (stored as bytes);
* ``chatlog_checkpoint_positions``: the checkpoint topic's next offset per partition.

A batch is one transaction: the touched threads' rows are read (``FOR
UPDATE`` on PostgreSQL), folded with :func:`~chatlog.projector.targets.checkpoint_fold.fold_thread`
(the Lua script's rules) and written back with the positions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from chatlog.errors import TargetError
from chatlog.projector.checkpoint_projection import (
    CheckpointApplyResult,
    CheckpointRecord,
    thread_arguments,
)
from chatlog.projector.targets.checkpoint_fold import (
    StoredRefs,
    ThreadOutcome,
    ThreadRow,
    ThreadState,
    fold_into,
)
from chatlog.projector.targets.sql_positions import advance_positions
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.checkpoint_stored import SEPARATOR
from chatlog.target_layout import sql_checkpoint_tables

#: Rows per ``IN (...)`` list.
_CHUNK = 500
T = TypeVar("T")


def _ordered_text() -> sa.types.TypeEngine[str]:
    # Checkpoint ids are read newest first by byte order, as Redis' ZREVRANGEBYLEX does;
    # PostgreSQL's default collation would order by locale instead.
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def checkpoint_tables(metadata: sa.MetaData, message_table: str) -> dict[str, sa.Table]:
    """The checkpoint tables of the read model beside ``message_table``, on ``metadata``."""
    names = sql_checkpoint_tables(message_table)
    field_table = {
        kind: sa.Table(
            name,
            metadata,
            sa.Column("thread_id", sa.Text, primary_key=True),
            sa.Column("field", sa.LargeBinary, primary_key=True),
            *([sa.Column("member", sa.LargeBinary, nullable=False)] if kind == "writes" else []),
            sa.Column("value", sa.LargeBinary, nullable=False),
        )
        for kind, name in (("blobs", names.blobs), ("writes", names.writes),
                           ("chunks", names.chunks))
    }
    sa.Index(f"ix_{names.writes}_member", field_table["writes"].c.thread_id,
             field_table["writes"].c.member)
    return {
        "threads": sa.Table(
            names.threads,
            metadata,
            sa.Column("thread_id", sa.Text, primary_key=True),
            sa.Column("partition", sa.Integer, nullable=True),
            sa.Column("offset", sa.BigInteger, nullable=False),
            sa.Column("owner", sa.Text, nullable=True, index=True),
            sa.Column("ttl_ms", sa.BigInteger, nullable=False),
            sa.Column("expiry", sa.BigInteger, nullable=False),
            sa.Column("namespaces", sa.Text, nullable=False),
            sa.Column("listed_ms", sa.BigInteger, nullable=True),
        ),
        "checkpoints": sa.Table(
            names.checkpoints,
            metadata,
            sa.Column("thread_id", sa.Text, primary_key=True),
            sa.Column("member", sa.LargeBinary, primary_key=True),
            sa.Column("checkpoint_ns", _ordered_text(), nullable=False),
            sa.Column("checkpoint_id", _ordered_text(), nullable=False),
            sa.Column("stored", sa.LargeBinary, nullable=False),
            sa.Column("versions", sa.Text, nullable=False),
            sa.Column("run_id", sa.Text, nullable=True, index=True),
            sa.Index(f"ix_{names.checkpoints}_order", "thread_id", "checkpoint_ns",
                     "checkpoint_id"),
        ),
        **field_table,
        "positions": sa.Table(
            names.positions,
            metadata,
            sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("next_offset", sa.BigInteger, nullable=False),
        ),
    }


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def write_member(write_field: str) -> str:
    """The checkpoint member (``ns NUL id``) a pending write's field belongs to."""
    return SEPARATOR.join(write_field.split(SEPARATOR, 2)[:2])


def thread_row(row: Any) -> ThreadRow:
    """A ``chatlog_threads`` row as the fold's :class:`ThreadRow`."""
    return ThreadRow(
        partition=row.partition,
        offset=int(row.offset),
        owner=row.owner,
        ttl_ms=int(row.ttl_ms),
        expiry=int(row.expiry),
        namespaces=json.loads(row.namespaces),
        listed_ms=None if row.listed_ms is None else int(row.listed_ms),
    )


class SqlCheckpointStore:
    """Applies checkpoint records to the SQL read model, positions in the same transaction.

    Args:
        engine: The target's engine.
        tables: :func:`checkpoint_tables`.
        lock: Read the touched rows ``FOR UPDATE`` (PostgreSQL).
    """

    def __init__(self, engine: sa.Engine, tables: dict[str, sa.Table], *, lock: bool) -> None:
        self.engine = engine
        self.t = tables
        self.lock = lock
        self.codec = CheckpointCodec()

    def apply(
        self, records: Sequence[CheckpointRecord], *, advance: Mapping[int, int]
    ) -> CheckpointApplyResult:
        """Apply ``records`` (log order) and record ``advance`` in one transaction.

        Raises:
            TargetError: the store failed; applying the same records again is safe.
        """
        try:
            with self.engine.begin() as conn:
                result = self._apply(conn, records)
                advance_positions(conn, self.t["positions"], advance, lock=self.lock)
        except SQLAlchemyError as exc:
            raise TargetError(
                f"applying checkpoints failed: {exc}; applying them again is safe"
            ) from exc
        return result

    def positions(self) -> dict[int, int]:
        """The checkpoint topic's next offset to apply, per partition."""
        p = self.t["positions"]
        rows = self._read(
            lambda conn: conn.execute(sa.select(p.c.partition, p.c.next_offset)).all()
        )
        return {int(part): int(off) for part, off in rows}

    def thread_ids(self) -> list[str]:
        """Every thread with a row."""
        t = self.t["threads"]
        rows = self._read(lambda conn: conn.execute(sa.select(t.c.thread_id)).all())
        return [row[0] for row in rows]

    def state(self, thread_id: str) -> ThreadState | None:
        """The thread's row and every stored item with its value, in one read."""

        def read(conn: sa.Connection) -> ThreadState | None:
            t = self.t["threads"]
            row = conn.execute(sa.select(t).where(t.c.thread_id == thread_id)).first()
            if row is None:
                return None
            state = ThreadState(thread_row(row))
            cp = self.t["checkpoints"]
            for member, stored, versions, run_id in conn.execute(
                sa.select(cp.c.member, cp.c.stored, cp.c.versions, cp.c.run_id)
                .where(cp.c.thread_id == thread_id)
            ):
                state.items["checkpoints"][bytes(member).decode()] = (
                    bytes(stored), versions, run_id
                )
            for kind in ("blobs", "writes", "chunks"):
                table = self.t[kind]
                for name, value in conn.execute(
                    sa.select(table.c.field, table.c.value).where(table.c.thread_id == thread_id)
                ):
                    state.items[kind][bytes(name).decode()] = bytes(value)
            return state

        return self._read(read)

    def _read(self, read: Callable[[sa.Connection], T]) -> T:
        try:
            with self.engine.connect() as conn:
                return read(conn)
        except SQLAlchemyError as exc:
            raise TargetError(f"reading checkpoint threads failed: {exc}") from exc

    def _apply(
        self, conn: sa.Connection, records: Sequence[CheckpointRecord]
    ) -> CheckpointApplyResult:
        result = CheckpointApplyResult()
        threads = thread_arguments(
            records, self.codec, lambda thread, names: self._stored_chunks(conn, thread, names),
            result,
        )
        if not threads:
            return result
        rows, refs = self._load(conn, sorted(threads))
        for thread_id, items in threads.items():
            outcome = fold_into(result, thread_id, items, rows.get(thread_id, ThreadRow()),
                                refs.get(thread_id, StoredRefs()))
            if outcome is not None:
                self._write(conn, thread_id, outcome, exists=thread_id in rows)
        return result

    def _stored_chunks(self, conn: sa.Connection, thread_id: str, names: list[str]
                       ) -> dict[str, bytes]:
        c = self.t["chunks"]
        rows = conn.execute(sa.select(c.c.field, c.c.value).where(
            c.c.thread_id == thread_id, c.c.field.in_([_bytes(n) for n in names])
        ))
        return {bytes(name).decode("utf-8"): bytes(value) for name, value in rows}

    def _load(
        self, conn: sa.Connection, thread_ids: list[str]
    ) -> tuple[dict[str, ThreadRow], dict[str, StoredRefs]]:
        t, cp, w = self.t["threads"], self.t["checkpoints"], self.t["writes"]
        rows: dict[str, ThreadRow] = {}
        refs: dict[str, StoredRefs] = {}
        for chunk in _chunks(thread_ids):
            query = sa.select(t).where(t.c.thread_id.in_(chunk))
            if self.lock:
                query = query.with_for_update()
            for row in conn.execute(query):
                rows[row.thread_id] = thread_row(row)
            for thread_id, member, versions, run_id in conn.execute(
                sa.select(cp.c.thread_id, cp.c.member, cp.c.versions, cp.c.run_id)
                .where(cp.c.thread_id.in_(chunk))
            ):
                found = refs.setdefault(thread_id, StoredRefs())
                found.checkpoints[bytes(member).decode("utf-8")] = (versions, run_id)
            for thread_id, name in conn.execute(
                sa.select(w.c.thread_id, w.c.field).where(w.c.thread_id.in_(chunk))
            ):
                refs.setdefault(thread_id, StoredRefs()).writes.add(bytes(name).decode("utf-8"))
        return rows, refs

    def _write(
        self, conn: sa.Connection, thread_id: str, outcome: ThreadOutcome, *, exists: bool
    ) -> None:
        kinds: dict[str, dict[str, Any]] = {
            "checkpoints": outcome.checkpoints,
            "blobs": outcome.blobs,
            "writes": outcome.writes,
            "chunks": outcome.chunks,
        }
        for kind, changed in kinds.items():
            table = self.t[kind]
            key = table.c.member if kind == "checkpoints" else table.c.field
            if outcome.cleared:
                conn.execute(sa.delete(table).where(table.c.thread_id == thread_id))
            else:
                for chunk in _chunks(sorted(changed)):
                    conn.execute(sa.delete(table).where(
                        table.c.thread_id == thread_id, key.in_([_bytes(n) for n in chunk])
                    ))
            values = [self._row(kind, thread_id, name, value)
                      for name, value in changed.items() if value is not None]
            if values:
                conn.execute(sa.insert(table), values)
        if not outcome.changed:
            return
        row = outcome.row
        t = self.t["threads"]
        if exists:
            conn.execute(sa.delete(t).where(t.c.thread_id == thread_id))
        conn.execute(sa.insert(t).values(
            thread_id=thread_id, partition=row.partition, offset=row.offset, owner=row.owner,
            ttl_ms=row.ttl_ms, expiry=row.expiry, namespaces=row.to_json(),
            listed_ms=row.listed_ms,
        ))

    @staticmethod
    def _row(kind: str, thread_id: str, name: str, value: Any) -> dict[str, Any]:
        if kind == "checkpoints":
            stored, versions, run_id = value
            checkpoint_ns, _, checkpoint_id = name.partition(SEPARATOR)
            return {
                "thread_id": thread_id, "member": _bytes(name), "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint_id, "stored": stored, "versions": versions,
                "run_id": run_id,
            }
        row = {"thread_id": thread_id, "field": _bytes(name), "value": _bytes(value)}
        if kind == "writes":
            row["member"] = _bytes(write_member(name))
        return row
