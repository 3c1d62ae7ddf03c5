"""The checkpoint projection: folds the checkpoint log into per-thread Redis structures.

:meth:`CheckpointProjection.apply` is the one "apply a checkpoint event": the
live projector and the checkpoint replay both call it. Like the chat
projection, each thread's events of a batch go to one Lua script call that
checks and advances the thread's tracking position (partition, last applied
offset) in the same atomic step as the view update, and all threads of a
batch share one pipeline: one round trip per batch. The projector stores the
serialized ``(type, bytes)`` pairs as they came; it never imports LangGraph.

A checkpoint event too large for one record arrives as ``EventChunk`` parts;
the script keeps the parts until the last one, whose record then carries the
whole reassembled event, applied in the same script call that drops the parts
(so a chunked checkpoint is either wholly applied or not at all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from chatlog.errors import ChatLogError, EventDecodeError, ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.projector.protocol import (
    CHECKPOINT_OP_CHUNK,
    CHECKPOINT_OP_CHUNK_DONE,
    CHECKPOINT_OP_DELETE,
    CHECKPOINT_OP_DROP,
    CHECKPOINT_OP_MULTI,
    CHECKPOINT_OP_PUT,
    CHECKPOINT_OP_TOUCH,
    CHECKPOINT_OP_WRITES,
    script_source,
)
from chatlog.projector.raw_pipeline import Command, ScriptBatch
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.checkpoint_events import (
    CheckpointEvent,
    CheckpointPayload,
    CheckpointPut,
    CheckpointsDeleted,
    EventChunk,
    ThreadCopied,
    ThreadDeleted,
    ThreadTouched,
    WritesPut,
)
from chatlog.schemas.checkpoint_stored import (
    SEPARATOR,
    checkpoint_member,
    stored_blob,
    stored_checkpoint,
    stored_versions,
    stored_write,
)

_APPLY = script_source("checkpoint_projection")


class CheckpointRecord(NamedTuple):
    """A decoded checkpoint event with its coordinates in the log."""

    partition: int
    offset: int
    event: CheckpointEvent


@dataclass(slots=True)
class CheckpointApplyResult:
    """What one :meth:`CheckpointProjection.apply` call did."""

    applied: int = 0
    skipped: int = 0
    #: Events of a user who does not own the thread: a verdict, not a failure.
    refused: int = 0
    failed: list[tuple[CheckpointRecord, str]] = field(default_factory=list)
    applied_by_type: dict[str, int] = field(default_factory=dict)


def decode_record(codec: CheckpointCodec, raw: Any) -> CheckpointRecord:
    """Decode one consumed Kafka record of the checkpoint topic.

    Raises:
        EventDecodeError: the value is not a checkpoint event, or its key is
            not the event's thread id (it would be on the wrong partition).
    """
    event = codec.decode(raw.value)
    key = raw.key.decode("utf-8", "replace") if raw.key is not None else None
    if key != event.thread_id:
        raise EventDecodeError(f"key {key!r} is not the thread id {event.thread_id!r}")
    return CheckpointRecord(raw.partition, raw.offset, event)


def chunk_field(chunk: EventChunk) -> str:
    """Field of a thread's chunk hash holding one part of a chunked event."""
    return f"{chunk.group_id}{SEPARATOR}{chunk.index}"


def _put_arguments(put: CheckpointPut) -> list[Any]:
    args: list[Any] = [
        checkpoint_member(put.checkpoint_ns, put.checkpoint_id),
        put.checkpoint_ns,
        stored_checkpoint(put),
        stored_versions(put),
        put.run_id or "",
    ]
    for blob in put.blobs:
        args.extend(stored_blob(put, blob))
    return args


def _writes_arguments(writes: WritesPut) -> list[Any]:
    args: list[Any] = []
    for write in writes.writes:
        args.extend(stored_write(writes, write))
        args.append("1" if write.index < 0 else "0")
    return args


def _sub(op: str, args: list[Any]) -> list[Any]:
    return [op, len(args), *args]


def _operation(payload: CheckpointPayload) -> tuple[str, list[Any]]:
    if isinstance(payload, CheckpointPut):
        return CHECKPOINT_OP_PUT, _put_arguments(payload)
    if isinstance(payload, WritesPut):
        return CHECKPOINT_OP_WRITES, _writes_arguments(payload)
    if isinstance(payload, ThreadDeleted):
        return CHECKPOINT_OP_DELETE, []
    if isinstance(payload, CheckpointsDeleted):
        members = [checkpoint_member(r.checkpoint_ns, r.checkpoint_id) for r in payload.checkpoints]
        return CHECKPOINT_OP_DROP, members
    if isinstance(payload, ThreadCopied):
        args: list[Any] = []
        for put in payload.checkpoints:
            args.extend(_sub(CHECKPOINT_OP_PUT, _put_arguments(put)))
        for writes in payload.writes:
            args.extend(_sub(CHECKPOINT_OP_WRITES, _writes_arguments(writes)))
        return CHECKPOINT_OP_MULTI, args
    if isinstance(payload, ThreadTouched):
        return CHECKPOINT_OP_TOUCH, []
    raise ReadModelError(f"no projection for payload {type(payload).__name__}")


def _header(record: CheckpointRecord, op: str, args: list[Any]) -> list[Any]:
    event = record.event
    millis = int(event.occurred_at.timestamp() * 1000)
    ttl = "" if event.ttl_ms is None else event.ttl_ms
    return [record.offset, op, millis, event.user_id or "", ttl, len(args), *args]


def event_arguments(
    record: CheckpointRecord, codec: CheckpointCodec, parts: dict[str, bytes]
) -> list[Any]:
    """One event's share of the apply script's ARGV: offset, op, time, user, TTL, n, args.

    The SQL and DynamoDB targets fold the same layout in Python
    (:mod:`chatlog.projector.targets.checkpoint_fold`), so both sides read one packing.

    Raises:
        EventDecodeError: a chunk is out of range or reassembles to a foreign event.
    """
    payload = record.event.payload
    if not isinstance(payload, EventChunk):
        op, args = _operation(payload)
        return _header(record, op, args)
    if not 0 <= payload.index < payload.count:
        raise EventDecodeError(f"chunk {payload.index} of {payload.count} is out of range")
    field_name = chunk_field(payload)
    if payload.index < payload.count - 1:
        return _header(record, CHECKPOINT_OP_CHUNK, [field_name, payload.data])
    group = [
        chunk_field(EventChunk(payload.group_id, index, payload.count, b""))
        for index in range(payload.count - 1)
    ]
    if any(name not in parts for name in group):
        # A group whose earlier parts never arrived (a writer that failed half-way,
        # or parts already applied and dropped): keep the part, apply nothing.
        return _header(record, CHECKPOINT_OP_CHUNK, [field_name, payload.data])
    inner = codec.decode(b"".join(parts[name] for name in group) + payload.data)
    if inner.thread_id != record.event.thread_id or isinstance(inner.payload, EventChunk):
        raise EventDecodeError("a chunked event must hold one event of the same thread")
    op, args = _operation(inner.payload)
    multi = [*_sub(op, args), *_sub(CHECKPOINT_OP_CHUNK_DONE, group)]
    return _header(record, CHECKPOINT_OP_MULTI, multi)


def chunk_parts(
    records: Sequence[CheckpointRecord],
    stored: Callable[[str, list[str]], dict[str, bytes]],
) -> dict[str, dict[str, bytes]]:
    """Per thread, the chunk parts the batch's final chunks need: the batch's, then stored ones.

    ``stored(thread_id, names)`` reads the parts an earlier batch kept (the
    names it does not find are left out).
    """
    parts: dict[str, dict[str, bytes]] = {}
    wanted: dict[str, set[str]] = {}
    for record in records:
        chunk = record.event.payload
        if not isinstance(chunk, EventChunk):
            continue
        thread = parts.setdefault(record.event.thread_id, {})
        thread[chunk_field(chunk)] = chunk.data
        if chunk.index == chunk.count - 1:
            wanted.setdefault(record.event.thread_id, set()).update(
                chunk_field(EventChunk(chunk.group_id, i, chunk.count, b""))
                for i in range(chunk.count - 1)
            )
    for thread_id, names in wanted.items():
        missing = sorted(names - set(parts[thread_id]))
        if missing:
            parts[thread_id].update(stored(thread_id, missing))
    return parts


#: A thread's events of a batch with their script arguments (:func:`event_arguments`).
ThreadEvents = dict[str, list[tuple[CheckpointRecord, list[Any]]]]


def thread_arguments(
    records: Sequence[CheckpointRecord],
    codec: CheckpointCodec,
    stored: Callable[[str, list[str]], dict[str, bytes]],
    result: CheckpointApplyResult,
) -> ThreadEvents:
    """The batch's events grouped by thread (log order), each with its script arguments.

    ``stored`` reads chunk parts an earlier batch kept (:func:`chunk_parts`);
    an event that cannot be packed goes to ``result.failed``.
    """
    parts = chunk_parts(records, stored)
    threads: ThreadEvents = {}
    for record in records:
        try:
            args = event_arguments(record, codec, parts.get(record.event.thread_id, {}))
        except ChatLogError as exc:
            result.failed.append((record, str(exc)))
            continue
        threads.setdefault(record.event.thread_id, []).append((record, args))
    return threads


def replay_decoder(codec: CheckpointCodec) -> Callable[[Any], CheckpointRecord | None]:
    """A replay's decode: a record, or ``None`` for one the live projector dead-letters."""

    def decode(raw: Any) -> CheckpointRecord | None:
        try:
            return decode_record(codec, raw)
        except ChatLogError:
            return None  # the live projector dead-letters it; a replay skips it

    return decode


class CheckpointProjection:
    """Applies checkpoint log records to the read model of one namespace.

    Raises :class:`redis.exceptions.ConnectionError` and
    :class:`redis.exceptions.TimeoutError` unchanged from :meth:`apply`, so the
    caller can retry the whole batch (it is idempotent); any other Redis
    failure becomes :class:`ReadModelError`.
    """

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        self.codec = CheckpointCodec()
        self._script = ScriptBatch(client, _APPLY, "applying checkpoints to Redis")

    def _stored_chunks(self, thread_id: str, missing: list[str]) -> dict[str, bytes]:
        try:
            found = self.client.hmget(self.keys.thread(thread_id).chunks, missing)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except redis.RedisError as exc:
            raise ReadModelError(f"reading chunks of thread {thread_id!r} failed: {exc}") from exc
        return {
            name: value for name, value in zip(missing, found, strict=True)
            if isinstance(value, bytes)
        }

    def apply(self, records: Sequence[CheckpointRecord]) -> CheckpointApplyResult:
        """Apply ``records`` (in log order) idempotently; one Redis round trip.

        A batch that completes a chunked event whose earlier parts came in an
        earlier batch reads those parts first (one more round trip).
        """
        result = CheckpointApplyResult()
        threads = thread_arguments(records, self.codec, self._stored_chunks, result)
        if not threads:
            return result
        replies = self._execute(threads)
        for (thread_id, items), reply in zip(threads.items(), replies, strict=True):
            if isinstance(reply, Exception):
                reason = f"thread {thread_id!r} not applied: {reply}"
                result.failed.extend((record, reason) for record, _ in items)
                continue
            applied, skipped, refused = int(reply[0]), int(reply[1]), int(reply[2])
            result.applied += applied
            result.skipped += skipped
            result.refused += refused
            # Offsets only grow within a thread, so the applied events are the newest.
            for record, _ in items[len(items) - applied - refused :]:
                name = record.event.event_type
                result.applied_by_type[name] = result.applied_by_type.get(name, 0) + 1
        return result

    def _execute(self, threads: dict[str, list[tuple[CheckpointRecord, list[Any]]]]) -> list[Any]:
        def commands(sha: str) -> Iterator[Command]:
            for thread_id, items in threads.items():
                keys = self.keys.thread(thread_id).all()
                user_prefix, user_suffix = self.keys.user_threads("\n").split("\n")
                run_prefix, run_suffix = self.keys.run_checkpoints("\n").split("\n")
                argv: list[Any] = [
                    items[0][0].partition,
                    user_prefix,
                    user_suffix,
                    run_prefix,
                    run_suffix,
                    thread_id,
                ]
                for _, args in items:
                    argv.extend(args)
                yield ("EVALSHA", sha, len(keys), *keys, *argv)

        return self._script.run(commands)
