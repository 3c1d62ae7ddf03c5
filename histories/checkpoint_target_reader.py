"""The LangGraph saver reads a SQL or DynamoDB read model (``CHATLOG_READ_MODEL=URL``).

It answers with the Redis reader's types (:class:`ThreadSelection`,
:class:`Lineage`, :class:`IndexReply`), so :class:`ChatLogCheckpointSaver`
keeps its read-your-writes, ownership and delta-channel logic unchanged.
:class:`TargetCheckpointReader` holds the reads (the select, the lineage
walk, the indexes); each store gives it a few primitives: the tables of
:func:`~chatlog.target_layout.sql_checkpoint_tables` (SQL), the items of
:mod:`~chatlog.projector.targets.dynamodb_checkpoints` (DynamoDB), which the
target projector writes per batch (a transaction, conditional writes). Each read
takes the thread's row (its position) first and the data after it, so the
data is never older than the position a writer waits for. An expired thread
(``expiry`` passed by the wall clock) reads as empty with its position and
owner, as Redis' expired keys beside the meta hash do.

Async reads run the sync read in a worker thread, like the session readers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

from chatlog.errors import TargetError
from chatlog.histories.checkpoint_lineage import Ancestor, Lineage
from chatlog.histories.checkpoint_read_model import StoredEntry, ThreadSelection, stored_entry
from chatlog.histories.target_reader import sql_engine
from chatlog.histories.thread_index import IndexReply
from chatlog.schemas.checkpoint_events import TypedValue
from chatlog.schemas.checkpoint_stored import (
    SEPARATOR,
    checkpoint_member,
    read_blob,
    read_checkpoint,
    read_write,
)
from chatlog.target_layout import sql_checkpoint_tables

T = TypeVar("T")

#: Rows per ``IN (...)`` list.
_CHUNK = 500


class CheckpointReading(Protocol):
    """What :class:`ChatLogCheckpointSaver` reads: the Redis reader or a target's."""

    def select(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str | None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> ThreadSelection:
        """Checkpoints of ``thread_id`` newest first (every namespace when ``None``)."""
        ...

    async def aselect(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str | None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> ThreadSelection:
        """Async :meth:`select`."""
        ...

    def lineage(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: list[str]
    ) -> Lineage:
        """The parent chain of a checkpoint for ``channels``."""
        ...

    async def alineage(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: list[str]
    ) -> Lineage:
        """Async :meth:`lineage`."""
        ...

    def user_threads(self, user_id: str, threads: list[str]) -> IndexReply:
        """``user_id``'s live threads newest first, and the positions of ``threads``."""
        ...

    async def auser_threads(self, user_id: str, threads: list[str]) -> IndexReply:
        """Async :meth:`user_threads`."""
        ...

    def run_checkpoints(self, run_ids: list[str], threads: list[str]) -> IndexReply:
        """The ``thread NUL member`` entries of ``run_ids``, and the positions of ``threads``."""
        ...

    async def arun_checkpoints(self, run_ids: list[str], threads: list[str]) -> IndexReply:
        """Async :meth:`run_checkpoints`."""
        ...

    def threads(self) -> list[str]:
        """Every thread the read model holds, sorted."""
        ...

    async def athreads(self) -> list[str]:
        """Async :meth:`threads`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        ...


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def is_live(expiry: int) -> bool:
    """Whether data with this expiry (epoch ms, 0 for never) is still live by the wall clock."""
    return not expiry or expiry > time.time() * 1000


class StoredThread(NamedTuple):
    """A thread's stored row (meta item) as a target reader reads it."""

    partition: int | None
    offset: int
    owner: str | None
    expiry: int
    namespaces: str


class StoredCheckpointRow(NamedTuple):
    """One stored checkpoint: its member (``ns NUL id``), frame and versions JSON."""

    member: bytes
    stored: bytes
    versions: str


class _Thread:
    """A thread's row: position, owner, liveness, namespaces in read order."""

    def __init__(self, row: StoredThread | None) -> None:
        self.partition = None if row is None else row.partition
        self.offset = -1 if row is None else int(row.offset)
        self.owner = None if row is None else row.owner
        self.live = row is not None and is_live(int(row.expiry))
        found: dict[str, int] = {} if row is None else json.loads(row.namespaces)
        self.namespaces = sorted(found, key=lambda ns: (found[ns], ns.encode()))

    def selection(self, entries: list[StoredEntry]) -> ThreadSelection:
        return ThreadSelection(self.partition, self.offset, entries, self.owner)


class TargetCheckpointReader:
    """The saver's reads over a store's primitives; a store implements the ``_`` methods.

    ``conn`` is whatever the store reads through in one read (a SQL
    connection; nothing for DynamoDB). Reads are sync; the ``a*`` methods run
    them on a worker thread.
    """

    def _read(self, what: str, read: Callable[[Any], T]) -> T:
        """``read(conn)``, the store's errors raised as :class:`TargetError` naming ``what``."""
        raise NotImplementedError

    def _thread(self, conn: Any, thread_id: str) -> StoredThread | None:
        raise NotImplementedError

    def _checkpoints(
        self, conn: Any, thread_id: str, ns: str, checkpoint_id: str | None,
        before: str | None, limit: int | None,
    ) -> list[StoredCheckpointRow]:
        """Newest first (id byte order): one id, ids below ``before``, or all of ``ns``."""
        raise NotImplementedError

    def _blobs(self, conn: Any, thread_id: str, fields: list[str]) -> dict[str, bytes]:
        raise NotImplementedError

    def _writes(self, conn: Any, thread_id: str, members: list[bytes]
                ) -> dict[bytes, list[bytes]]:
        """Each member's stored writes, in field (byte) order."""
        raise NotImplementedError

    def _positions(self, conn: Any, threads: list[str]) -> dict[str, tuple[int | None, int]]:
        raise NotImplementedError

    def _listed(self, conn: Any, user_id: str) -> list[tuple[str, int]]:
        """The user's listed threads (owned, not expired) with their index scores."""
        raise NotImplementedError

    def _run_entries(self, conn: Any, run_id: str) -> list[str]:
        """``thread NUL ns NUL id`` of the run's checkpoints."""
        raise NotImplementedError

    def _thread_ids(self, conn: Any) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""
        raise NotImplementedError

    # -- the saver's reads -----------------------------------------------------

    def select(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str | None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> ThreadSelection:
        """Checkpoints of ``thread_id`` newest first, like the Redis select script.

        Args:
            thread_id: The thread.
            checkpoint_ns: Only this namespace; ``None`` for every namespace
                (in the order they first appeared).
            checkpoint_id: Only this checkpoint.
            before: Only checkpoints with an id below this one.
            limit: At most this many (``None``: all).
        """

        def read(conn: Any) -> ThreadSelection:
            # The row (position) first, the data after it: the data is never older.
            thread = _Thread(self._thread(conn, thread_id))
            if not thread.live:
                return thread.selection([])
            namespaces = thread.namespaces if checkpoint_ns is None else [checkpoint_ns]
            rows: list[StoredCheckpointRow] = []
            for ns in namespaces:
                remaining = None if limit is None else limit - len(rows)
                if remaining is not None and remaining <= 0:
                    break
                rows += self._checkpoints(conn, thread_id, ns, checkpoint_id, before, remaining)
            return thread.selection(self._entries(conn, thread_id, rows))

        return self._read(f"reading thread {thread_id!r}", read)

    def _entries(
        self, conn: Any, thread_id: str, rows: list[StoredCheckpointRow]
    ) -> list[StoredEntry]:
        fields = sorted({f for row in rows for f in json.loads(row.versions)[1::2]})
        blobs = self._blobs(conn, thread_id, fields) if fields else {}
        writes = self._writes(conn, thread_id, [row.member for row in rows]) if rows else {}
        return [
            stored_entry([
                row.member, row.stored, row.versions,
                [blobs.get(f) for f in json.loads(row.versions)[1::2]],
                writes.get(row.member, []),
            ])
            for row in rows
        ]

    def lineage(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: list[str]
    ) -> Lineage:
        """The parent chain of a checkpoint for ``channels``, as the Redis lineage script walks it.

        From the checkpoint's parent towards the root: per ancestor its pending
        writes and the non-empty values of the channels still without a seed;
        it stops once every channel has one.
        """

        def read(conn: Any) -> Lineage:
            thread = _Thread(self._thread(conn, thread_id))
            walked = Lineage(thread.partition, thread.offset, thread.owner, [])
            if not thread.live:
                return walked
            start = self._checkpoints(conn, thread_id, checkpoint_ns, checkpoint_id, None, 1)
            if not start:
                return walked
            remaining = list(dict.fromkeys(channels))
            stored = start[0].stored
            while remaining:
                parent = read_checkpoint(stored).parent_checkpoint_id
                if not parent:
                    break
                found = self._checkpoints(conn, thread_id, checkpoint_ns, parent, None, 1)
                if not found:
                    break
                stored = found[0].stored
                ancestor = self._ancestor(conn, thread_id, found[0], parent, remaining)
                walked.ancestors.append(ancestor)
                remaining = [c for c in remaining if c not in ancestor.seeds]
            return walked

        return self._read(f"walking thread {thread_id!r}", read)

    def _ancestor(
        self, conn: Any, thread_id: str, row: StoredCheckpointRow, checkpoint_id: str,
        remaining: list[str],
    ) -> Ancestor:
        writes = [read_write(w) for w in self._writes(conn, thread_id, [row.member]).get(
            row.member, []
        )]
        flat = json.loads(row.versions)
        wanted = {f: c for c, f in zip(flat[::2], flat[1::2], strict=True) if c in remaining}
        values: dict[str, TypedValue] = {}
        for name, value in (self._blobs(conn, thread_id, sorted(wanted)) if wanted else {}).items():
            blob = read_blob(value)
            if blob.type != "empty":
                values[wanted[name]] = blob
        # The seeds in the checkpoint's channel order, as the script returns them.
        seeds = {c: values[c] for c in flat[::2] if c in values}
        return Ancestor(checkpoint_id, writes, seeds)

    def user_threads(self, user_id: str, threads: list[str]) -> IndexReply:
        """``user_id``'s live threads newest first, and the positions of ``threads``."""

        def read(conn: Any) -> IndexReply:
            positions = self._positions(conn, threads)
            # ZREVRANGE's order: score, then member, both descending.
            ordered = sorted(self._listed(conn, user_id), key=lambda r: (r[1], r[0].encode()),
                             reverse=True)
            return IndexReply([(thread, float(at)) for thread, at in ordered], positions)

        return self._read(f"listing {user_id!r}'s threads", read)

    def run_checkpoints(self, run_ids: list[str], threads: list[str]) -> IndexReply:
        """The ``thread NUL member`` entries of ``run_ids``, and the positions of ``threads``."""

        def read(conn: Any) -> IndexReply:
            positions = self._positions(conn, threads)
            entries = [(entry, 0.0) for run in run_ids
                       for entry in sorted(self._run_entries(conn, run))]
            return IndexReply(entries, positions)

        return self._read("reading the run index", read)

    def threads(self) -> list[str]:
        """Every thread the projector has applied events of, sorted."""
        return self._read("listing checkpoint threads", lambda conn: sorted(self._thread_ids(conn)))

    async def aselect(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str | None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> ThreadSelection:
        """Async :meth:`select`."""
        return await asyncio.to_thread(
            lambda: self.select(thread_id, checkpoint_ns=checkpoint_ns,
                                checkpoint_id=checkpoint_id, before=before, limit=limit)
        )

    async def alineage(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: list[str]
    ) -> Lineage:
        """Async :meth:`lineage`."""
        return await asyncio.to_thread(
            self.lineage, thread_id, checkpoint_ns, checkpoint_id, channels
        )

    async def auser_threads(self, user_id: str, threads: list[str]) -> IndexReply:
        """Async :meth:`user_threads`."""
        return await asyncio.to_thread(self.user_threads, user_id, threads)

    async def arun_checkpoints(self, run_ids: list[str], threads: list[str]) -> IndexReply:
        """Async :meth:`run_checkpoints`."""
        return await asyncio.to_thread(self.run_checkpoints, run_ids, threads)

    async def athreads(self) -> list[str]:
        """Async :meth:`threads`."""
        return await asyncio.to_thread(self.threads)

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()


class SqlCheckpointReader(TargetCheckpointReader):
    """Reads LangGraph threads from a SQL read model (``sqlite:///PATH``, ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        sa, self.engine, table = sql_engine(url)
        self._sa = sa
        names = sql_checkpoint_tables(table)
        self.t = sa.table(names.threads, *map(sa.column, (
            "thread_id", "partition", "offset", "owner", "ttl_ms", "expiry", "namespaces",
            "listed_ms",
        )))
        self.cp = sa.table(names.checkpoints, *map(sa.column, (
            "thread_id", "member", "checkpoint_ns", "checkpoint_id", "stored", "versions", "run_id",
        )))
        self.blobs = sa.table(names.blobs, *map(sa.column, ("thread_id", "field", "value")))
        self.writes = sa.table(
            names.writes, *map(sa.column, ("thread_id", "field", "member", "value"))
        )

    def _read(self, what: str, read: Callable[[Any], T]) -> T:
        try:
            with self.engine.connect() as conn:
                return read(conn)
        except self._sa.exc.SQLAlchemyError as exc:
            raise TargetError(f"{what} failed: {exc}") from exc

    def _thread(self, conn: Any, thread_id: str) -> StoredThread | None:
        sa, t = self._sa, self.t
        row = conn.execute(
            sa.select(t.c.partition, t.c.offset, t.c.owner, t.c.expiry, t.c.namespaces)
            .where(t.c.thread_id == thread_id)
        ).first()
        return None if row is None else StoredThread(*row)

    def _checkpoints(
        self, conn: Any, thread_id: str, ns: str, checkpoint_id: str | None,
        before: str | None, limit: int | None,
    ) -> list[StoredCheckpointRow]:
        sa, cp = self._sa, self.cp
        query = sa.select(cp.c.member, cp.c.stored, cp.c.versions).where(
            cp.c.thread_id == thread_id, cp.c.checkpoint_ns == ns
        )
        if checkpoint_id is not None:
            if before is not None and not checkpoint_id < before:
                return []
            query = query.where(cp.c.checkpoint_id == checkpoint_id)
        elif before is not None:
            query = query.where(cp.c.checkpoint_id < before)
        query = query.order_by(cp.c.checkpoint_id.desc())
        if limit is not None:
            query = query.limit(limit)
        return [StoredCheckpointRow(bytes(m), bytes(s), v) for m, s, v in conn.execute(query)]

    def _blobs(self, conn: Any, thread_id: str, fields: list[str]) -> dict[str, bytes]:
        sa, b = self._sa, self.blobs
        found: dict[str, bytes] = {}
        for chunk in _chunks([f.encode() for f in fields]):
            for name, value in conn.execute(
                sa.select(b.c.field, b.c.value).where(b.c.thread_id == thread_id,
                                                      b.c.field.in_(chunk))
            ):
                found[bytes(name).decode()] = bytes(value)
        return found

    def _writes(self, conn: Any, thread_id: str, members: list[bytes]
                ) -> dict[bytes, list[bytes]]:
        sa, w = self._sa, self.writes
        found: dict[bytes, list[bytes]] = {}
        for chunk in _chunks(members):
            for member, value in conn.execute(
                sa.select(w.c.member, w.c.value)
                .where(w.c.thread_id == thread_id, w.c.member.in_(chunk)).order_by(w.c.field)
            ):
                found.setdefault(bytes(member), []).append(bytes(value))
        return found

    def _positions(self, conn: Any, threads: list[str]) -> dict[str, tuple[int | None, int]]:
        sa, t = self._sa, self.t
        positions: dict[str, tuple[int | None, int]] = {th: (None, -1) for th in threads}
        for chunk in _chunks(threads):
            for thread_id, partition, offset in conn.execute(
                sa.select(t.c.thread_id, t.c.partition, t.c.offset)
                .where(t.c.thread_id.in_(chunk))
            ):
                positions[thread_id] = (partition, int(offset))
        return positions

    def _listed(self, conn: Any, user_id: str) -> list[tuple[str, int]]:
        sa, t = self._sa, self.t
        now = int(time.time() * 1000)
        rows = conn.execute(
            sa.select(t.c.thread_id, t.c.listed_ms)
            .where(t.c.owner == user_id, t.c.listed_ms.is_not(None))
            .where(sa.or_(t.c.expiry == 0, t.c.expiry > now))
        )
        return [(thread, int(at)) for thread, at in rows]

    def _run_entries(self, conn: Any, run_id: str) -> list[str]:
        sa, cp = self._sa, self.cp
        return [
            f"{thread_id}{SEPARATOR}{checkpoint_member(ns, cid)}"
            for thread_id, ns, cid in conn.execute(
                sa.select(cp.c.thread_id, cp.c.checkpoint_ns, cp.c.checkpoint_id)
                .where(cp.c.run_id == run_id)
            )
        ]

    def _thread_ids(self, conn: Any) -> list[str]:
        sa, t = self._sa, self.t
        return [row[0] for row in conn.execute(sa.select(t.c.thread_id))]

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def open_checkpoint_reader(url: str) -> CheckpointReading | None:
    """The saver's reader of ``url`` (``CHATLOG_READ_MODEL``); ``None`` for Redis (the default).

    Raises:
        TargetError: the store cannot be opened, or chatlog has no saver reader for it.
    """
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme in ("redis", "rediss"):
        return None
    if scheme in ("sqlite", "postgresql", "postgres"):
        return SqlCheckpointReader(url)
    if scheme == "dynamodb":
        from chatlog.histories.checkpoint_dynamodb_reader import DynamoDbCheckpointReader

        return DynamoDbCheckpointReader(url)
    raise TargetError(
        f"the LangGraph saver cannot read {scheme}://... (CHATLOG_READ_MODEL): use redis://, "
        "sqlite:///PATH, postgresql://... or dynamodb://TABLE"
    )
