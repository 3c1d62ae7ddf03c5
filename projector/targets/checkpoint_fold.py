"""The checkpoint apply rules for the SQL and DynamoDB targets: the Lua script, in Python.

:mod:`chatlog.projector.checkpoint_projection` packs each checkpoint event
into the apply script's ARGV layout (:func:`event_arguments`); this module
folds the very same layout onto one thread's stored state, rule for rule with
``checkpoint_projection.lua``: the offset check (redelivery is skipped), the
ownership check (another user's event is refused, its offset consumed), the
expiry by event time (an event at or after the thread's expiry first drops its
data), ``HSETNX`` for pending writes of index >= 0, blobs dropped only when no
remaining checkpoint refers to them, a namespace forgotten with its last
checkpoint, and the user index entry moved by the newest applied event.

A store loads a thread's light state (:class:`ThreadRow`, the checkpoints'
version lists and run ids, the pending writes' field names), calls
:func:`fold_thread`, and writes the :class:`ThreadOutcome` back together with
the positions (one transaction, or conditional writes). Values (checkpoints,
blobs, writes, chunks) are only ever written or deleted, never read, so they
are not loaded. Expiry is by event time alone: stores without key expiry keep
an expired thread's rows until its next event (readers hide them by
``expiry``), where Redis drops the keys by the wall clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chatlog.projector.checkpoint_projection import CheckpointApplyResult, CheckpointRecord
from chatlog.projector.protocol import (
    CHECKPOINT_OP_CHUNK,
    CHECKPOINT_OP_CHUNK_DONE,
    CHECKPOINT_OP_DELETE,
    CHECKPOINT_OP_DROP,
    CHECKPOINT_OP_MULTI,
    CHECKPOINT_OP_PUT,
    CHECKPOINT_OP_WRITES,
)
from chatlog.schemas.checkpoint_stored import SEPARATOR

#: An event's header in the script's ARGV: offset, op, time (ms), user, TTL, n.
_HEADER = 6


@dataclass(slots=True)
class ThreadRow:
    """A thread's tracking state, as the Redis meta hash and user index hold it."""

    partition: int | None = None
    offset: int = -1
    owner: str | None = None
    ttl_ms: int = 0
    #: Event time (epoch ms) the data expires at; 0 for never.
    expiry: int = 0
    #: Checkpoint namespaces by the offset they first appeared at (the read order).
    namespaces: dict[str, int] = field(default_factory=dict)
    #: The thread's score in its owner's thread index (last activity, ms); None: not listed.
    listed_ms: int | None = None

    def to_json(self) -> str:
        """The namespaces as stored (JSON keeps their order by first appearance)."""
        return json.dumps(self.namespaces)


#: The kinds of a thread's stored items, as :class:`ThreadState` keys them.
KINDS = ("checkpoints", "blobs", "writes", "chunks")


@dataclass(slots=True)
class ThreadState:
    """One thread as stored: its row and, per kind, field -> value.

    Checkpoint values are ``(stored frame, versions JSON, run id)``.
    """

    row: ThreadRow
    items: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )


@dataclass(slots=True)
class StoredRefs:
    """What the fold reads of a thread's stored checkpoints and writes (never values)."""

    #: Checkpoint member (``ns NUL id``) -> (its stored versions JSON, its run id or None).
    checkpoints: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: Field names of the stored pending writes.
    writes: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ThreadOutcome:
    """What a batch does to one thread: counts, its new row, and the rows to write.

    Each ``*_put`` maps a field to its new value, or to ``None`` to delete it.
    With ``cleared`` every stored row of the thread goes first.
    """

    row: ThreadRow
    applied: int = 0
    skipped: int = 0
    refused: int = 0
    cleared: bool = False
    #: Checkpoint member -> (stored checkpoint, versions JSON, run id) or None.
    checkpoints: dict[str, tuple[bytes, str, str | None] | None] = field(default_factory=dict)
    blobs: dict[str, bytes | None] = field(default_factory=dict)
    writes: dict[str, bytes | None] = field(default_factory=dict)
    chunks: dict[str, bytes | None] = field(default_factory=dict)
    #: Offsets of the applied events (and the refused ones, in ``refused_offsets``).
    applied_offsets: list[int] = field(default_factory=list)
    refused_offsets: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the thread's row moved (an event was applied or refused)."""
        return self.applied + self.refused > 0


def member_namespace(member: str) -> str:
    """The checkpoint namespace of an index member."""
    return member.split(SEPARATOR, 1)[0]


def _blob_fields(versions: str) -> list[str]:
    flat: list[str] = json.loads(versions)
    return flat[1::2]


class _Fold:
    def __init__(self, thread_id: str, row: ThreadRow, refs: StoredRefs) -> None:
        self.thread_id = thread_id
        self.out = ThreadOutcome(row)
        self.refs = {m: (v, r) for m, (v, r) in refs.checkpoints.items()}
        self.write_fields = set(refs.writes)

    def drop_thread(self) -> None:
        out = self.out
        out.cleared = True
        out.checkpoints.clear()
        out.blobs.clear()
        out.writes.clear()
        out.chunks.clear()
        self.refs.clear()
        self.write_fields.clear()
        out.row.namespaces = {}
        out.row.listed_ms = None

    def drop_checkpoints(self, members: list[str]) -> None:
        out = self.out
        dropped_fields: set[str] = set()
        touched_ns: set[str] = set()
        for member in members:
            ref = self.refs.pop(member, None)
            if ref is None:
                continue
            dropped_fields.update(_blob_fields(ref[0]))
            out.checkpoints[member] = None
            prefix = member + SEPARATOR
            for write in [w for w in self.write_fields if w.startswith(prefix)]:
                self.write_fields.discard(write)
                out.writes[write] = None
            touched_ns.add(member_namespace(member))
        # A blob is shared by every checkpoint whose channel kept that version.
        for versions, _ in self.refs.values():
            dropped_fields.difference_update(_blob_fields(versions))
        for name in dropped_fields:
            out.blobs[name] = None
        remaining = {member_namespace(m) for m in self.refs}
        for ns in touched_ns - remaining:
            out.row.namespaces.pop(ns, None)

    def apply_op(self, offset: int, op: str, args: list[Any]) -> None:
        out = self.out
        if op == CHECKPOINT_OP_PUT:
            member, ns, stored, versions, run = args[:5]
            run_id = str(run) or (self.refs.get(member, ("", None))[1])
            self.refs[member] = (versions, run_id)
            out.row.namespaces.setdefault(ns, offset)
            out.checkpoints[member] = (stored, versions, run_id)
            for j in range(5, len(args), 2):
                out.blobs[args[j]] = args[j + 1]
        elif op == CHECKPOINT_OP_WRITES:
            for j in range(0, len(args), 3):
                name, value, overwrite = args[j], args[j + 1], args[j + 2]
                if overwrite == "1" or name not in self.write_fields:
                    out.writes[name] = value
                self.write_fields.add(name)
        elif op == CHECKPOINT_OP_DELETE:
            self.drop_thread()
        elif op == CHECKPOINT_OP_DROP:
            self.drop_checkpoints(list(args))
        elif op == CHECKPOINT_OP_MULTI:
            j = 0
            while j < len(args):
                inner, n = args[j], int(args[j + 1])
                self.apply_op(offset, inner, args[j + 2 : j + 2 + n])
                j += 2 + n
        elif op == CHECKPOINT_OP_CHUNK:
            out.chunks[args[0]] = args[1]
        elif op == CHECKPOINT_OP_CHUNK_DONE:
            for name in args:
                out.chunks[name] = None


def fold_thread(
    thread_id: str, partition: int, row: ThreadRow, refs: StoredRefs, events: list[list[Any]]
) -> ThreadOutcome:
    """Fold one thread's events (each :func:`event_arguments`, in log order) onto its state.

    Raises:
        ValueError: the thread is tracked on another partition (the message is
            the script's ``PARTITION`` error); nothing of the batch applies.
    """
    if row.partition is not None and row.partition != partition:
        raise ValueError(
            f"PARTITION thread is tracked on partition {row.partition}, event comes from "
            f"partition {partition}"
        )
    fold = _Fold(thread_id, row, refs)
    out = fold.out
    last, active = row.offset, None
    for event in events:
        offset, op, ms, user, ttl = (
            int(event[0]), str(event[1]), int(event[2]), str(event[3]), event[4]
        )
        args = event[_HEADER:]
        if offset <= last:
            out.skipped += 1
            continue
        if user and row.owner and row.owner != user:
            out.refused += 1
            out.refused_offsets.append(offset)
            last = offset
            continue
        if row.expiry > 0 and ms >= row.expiry:
            fold.drop_thread()
        if user and not row.owner:
            row.owner = user
        if ttl != "":
            row.ttl_ms = int(ttl)
        fold.apply_op(offset, op, list(args))
        row.expiry = ms + row.ttl_ms if row.ttl_ms > 0 else 0
        if op != CHECKPOINT_OP_DELETE and row.owner and fold.refs:
            active = ms
        elif op == CHECKPOINT_OP_DELETE:
            active = None
        last = offset
        out.applied += 1
        out.applied_offsets.append(offset)
    if out.changed:
        row.partition, row.offset = partition, last
    if active is not None and row.owner:
        row.listed_ms = active if row.listed_ms is None else max(row.listed_ms, active)
    return out


def fold_into(
    result: CheckpointApplyResult,
    thread_id: str,
    items: list[tuple[CheckpointRecord, list[Any]]],
    row: ThreadRow,
    refs: StoredRefs,
) -> ThreadOutcome | None:
    """:func:`fold_thread` on one thread's events of a batch, counted into ``result``.

    A thread tracked on another partition fails every one of its events
    (``None``, nothing to write), as the script's ``PARTITION`` error does.
    """
    try:
        outcome = fold_thread(thread_id, items[0][0].partition, row, refs,
                              [args for _, args in items])
    except ValueError as exc:
        result.failed += [(r, f"thread {thread_id!r} not applied: {exc}") for r, _ in items]
        return None
    result.applied += outcome.applied
    result.skipped += outcome.skipped
    result.refused += outcome.refused
    decided = set(outcome.applied_offsets) | set(outcome.refused_offsets)
    for record, _ in items:
        if record.offset in decided:
            name = record.event.event_type
            result.applied_by_type[name] = result.applied_by_type.get(name, 0) + 1
    return outcome
