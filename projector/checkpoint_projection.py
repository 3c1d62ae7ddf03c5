"""The checkpoint projection: folds the checkpoint log into per-thread Redis structures.

:meth:`CheckpointProjection.apply` is the one "apply a checkpoint event": the
live projector and the checkpoint replay both call it. Like the chat
projection, each thread's events of a batch go to one Lua script call that
checks and advances the thread's tracking position (partition, last applied
offset) in the same atomic step as the view update, and all threads of a
batch share one pipeline: one round trip per batch. The projector stores the
serialized ``(type, bytes)`` pairs as they came; it never imports LangGraph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from chatlog.errors import ChatLogError, EventDecodeError, ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.projector.protocol import (
    CHECKPOINT_OP_DELETE,
    CHECKPOINT_OP_PUT,
    CHECKPOINT_OP_WRITES,
    script_source,
)
from chatlog.projector.raw_pipeline import Command, ScriptBatch
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.checkpoint_events import (
    CheckpointEvent,
    CheckpointPut,
    ThreadDeleted,
    WritesPut,
)
from chatlog.schemas.checkpoint_stored import (
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


def _arguments(record: CheckpointRecord) -> list[Any]:
    payload = record.event.payload
    args: list[Any]
    if isinstance(payload, CheckpointPut):
        args = [
            checkpoint_member(payload.checkpoint_ns, payload.checkpoint_id),
            payload.checkpoint_ns,
            stored_checkpoint(payload),
            stored_versions(payload),
        ]
        for blob in payload.blobs:
            args.extend(stored_blob(payload, blob))
        op = CHECKPOINT_OP_PUT
    elif isinstance(payload, WritesPut):
        args = []
        for write in payload.writes:
            args.extend(stored_write(payload, write))
            args.append("1" if write.index < 0 else "0")
        op = CHECKPOINT_OP_WRITES
    elif isinstance(payload, ThreadDeleted):
        args, op = [], CHECKPOINT_OP_DELETE
    else:
        raise ReadModelError(f"no projection for event type {record.event.event_type}")
    return [record.offset, op, len(args), *args]


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
        self._script = ScriptBatch(client, _APPLY, "applying checkpoints to Redis")

    def apply(self, records: Sequence[CheckpointRecord]) -> CheckpointApplyResult:
        """Apply ``records`` (in log order) idempotently; one Redis round trip."""
        result = CheckpointApplyResult()
        threads: dict[str, list[tuple[CheckpointRecord, list[Any]]]] = {}
        for record in records:
            try:
                args = _arguments(record)
            except ChatLogError as exc:
                result.failed.append((record, str(exc)))
                continue
            threads.setdefault(record.event.thread_id, []).append((record, args))
        if not threads:
            return result
        replies = self._execute(threads)
        for (thread_id, items), reply in zip(threads.items(), replies, strict=True):
            if isinstance(reply, Exception):
                reason = f"thread {thread_id!r} not applied: {reply}"
                result.failed.extend((record, reason) for record, _ in items)
                continue
            applied, skipped = int(reply[0]), int(reply[1])
            result.applied += applied
            result.skipped += skipped
            # Offsets only grow within a thread, so the applied events are the newest.
            for record, _ in items[len(items) - applied :]:
                name = record.event.event_type
                result.applied_by_type[name] = result.applied_by_type.get(name, 0) + 1
        return result

    def _execute(self, threads: dict[str, list[tuple[CheckpointRecord, list[Any]]]]) -> list[Any]:
        def commands(sha: str) -> Iterator[Command]:
            for thread_id, items in threads.items():
                argv: list[Any] = [items[0][0].partition]
                for _, args in items:
                    argv.extend(args)
                keys = self.keys.thread(thread_id).all()
                yield ("EVALSHA", sha, len(keys), *keys, *argv)

        return self._script.run(commands)
