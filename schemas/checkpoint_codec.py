"""Avro single-object encoding of :class:`~chatlog.schemas.checkpoint_events.CheckpointEvent`.

Same wire format and schema registry as :mod:`chatlog.schemas.codec`: ``C3 01``,
the writer schema's CRC-64-AVRO fingerprint, the Avro body; old versions of
``chatlog.CheckpointEvent`` are resolved by fingerprint against the newest.
"""

from __future__ import annotations

from typing import Any

from chatlog.errors import EventDecodeError
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    ChannelVersion,
    CheckpointEvent,
    CheckpointPayload,
    CheckpointPut,
    CheckpointRef,
    CheckpointsDeleted,
    EventChunk,
    PendingWriteValue,
    ThreadCopied,
    ThreadDeleted,
    ThreadTouched,
    TypedValue,
    WritesPut,
)
from chatlog.schemas.codec import SingleObjectCodec

#: Record family of the checkpoint log.
CHECKPOINT_EVENT = "chatlog.CheckpointEvent"
CONTENT_TYPE = "application/vnd.chatlog.checkpoint+avro"


class CheckpointCodec(SingleObjectCodec[CheckpointEvent]):
    """Encode and decode checkpoint events in Avro single-object encoding."""

    family = CHECKPOINT_EVENT

    def _to_avro(self, event: CheckpointEvent) -> dict[str, Any]:
        return _event_to_avro(event)

    def _from_avro(self, record: Any) -> CheckpointEvent:
        return _event_from_avro(record)


def _typed(value: TypedValue) -> dict[str, Any]:
    return {"type": value.type, "data": value.data}


def _event_to_avro(event: CheckpointEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "thread_id": event.thread_id,
        "occurred_at": event.occurred_at,
        "source": event.source,
        "user_id": event.user_id,
        "ttl_ms": event.ttl_ms,
        "payload": _payload_to_avro(event.payload),
    }


def _put_to_avro(payload: CheckpointPut) -> dict[str, Any]:
    return {
        "checkpoint_ns": payload.checkpoint_ns,
        "checkpoint_id": payload.checkpoint_id,
        "parent_checkpoint_id": payload.parent_checkpoint_id,
        "checkpoint": _typed(payload.checkpoint),
        "metadata": _typed(payload.metadata),
        "channel_versions": [
            {"channel": v.channel, "version": v.version} for v in payload.channel_versions
        ],
        "blobs": [
            {"channel": b.channel, "version": b.version, "value": _typed(b.value)}
            for b in payload.blobs
        ],
        "run_id": payload.run_id,
    }


def _writes_to_avro(payload: WritesPut) -> dict[str, Any]:
    return {
        "checkpoint_ns": payload.checkpoint_ns,
        "checkpoint_id": payload.checkpoint_id,
        "task_id": payload.task_id,
        "task_path": payload.task_path,
        "writes": [
            {"index": w.index, "channel": w.channel, "value": _typed(w.value)}
            for w in payload.writes
        ],
    }


def _payload_to_avro(payload: CheckpointPayload) -> tuple[str, dict[str, Any]]:
    if isinstance(payload, CheckpointPut):
        return ("chatlog.CheckpointPut", _put_to_avro(payload))
    if isinstance(payload, WritesPut):
        return ("chatlog.WritesPut", _writes_to_avro(payload))
    if isinstance(payload, ThreadDeleted):
        return ("chatlog.ThreadDeleted", {})
    if isinstance(payload, CheckpointsDeleted):
        refs = [
            {"checkpoint_ns": r.checkpoint_ns, "checkpoint_id": r.checkpoint_id}
            for r in payload.checkpoints
        ]
        return ("chatlog.CheckpointsDeleted", {"checkpoints": refs, "reason": payload.reason})
    if isinstance(payload, ThreadCopied):
        return (
            "chatlog.ThreadCopied",
            {
                "source_thread_id": payload.source_thread_id,
                "checkpoints": [_put_to_avro(p) for p in payload.checkpoints],
                "writes": [_writes_to_avro(w) for w in payload.writes],
            },
        )
    if isinstance(payload, ThreadTouched):
        return ("chatlog.ThreadTouched", {})
    if isinstance(payload, EventChunk):
        return (
            "chatlog.EventChunk",
            {
                "group_id": payload.group_id,
                "index": payload.index,
                "count": payload.count,
                "data": payload.data,
            },
        )
    raise TypeError(f"not a checkpoint payload event: {type(payload).__name__}")


def _event_from_avro(record: Any) -> CheckpointEvent:
    name, body = record["payload"]
    return CheckpointEvent(
        event_id=str(record["event_id"]),
        thread_id=record["thread_id"],
        source=record["source"],
        occurred_at=record["occurred_at"],
        user_id=record.get("user_id"),
        ttl_ms=record.get("ttl_ms"),
        payload=_payload_from_avro(name, body),
    )


def _value(body: dict[str, Any]) -> TypedValue:
    return TypedValue(body["type"], bytes(body["data"]))


def _put_from_avro(body: dict[str, Any]) -> CheckpointPut:
    return CheckpointPut(
        checkpoint_ns=body["checkpoint_ns"],
        checkpoint_id=body["checkpoint_id"],
        parent_checkpoint_id=body["parent_checkpoint_id"],
        checkpoint=_value(body["checkpoint"]),
        metadata=_value(body["metadata"]),
        channel_versions=tuple(ChannelVersion(**v) for v in body["channel_versions"]),
        blobs=tuple(
            ChannelBlob(b["channel"], b["version"], _value(b["value"])) for b in body["blobs"]
        ),
        run_id=body.get("run_id"),
    )


def _writes_from_avro(body: dict[str, Any]) -> WritesPut:
    return WritesPut(
        checkpoint_ns=body["checkpoint_ns"],
        checkpoint_id=body["checkpoint_id"],
        task_id=body["task_id"],
        task_path=body["task_path"],
        writes=tuple(
            PendingWriteValue(w["index"], w["channel"], _value(w["value"])) for w in body["writes"]
        ),
    )


def _payload_from_avro(name: str, body: dict[str, Any]) -> CheckpointPayload:
    if name == "chatlog.CheckpointPut":
        return _put_from_avro(body)
    if name == "chatlog.WritesPut":
        return _writes_from_avro(body)
    if name == "chatlog.ThreadDeleted":
        return ThreadDeleted()
    if name == "chatlog.CheckpointsDeleted":
        return CheckpointsDeleted(
            tuple(CheckpointRef(**r) for r in body["checkpoints"]), body["reason"]
        )
    if name == "chatlog.ThreadCopied":
        return ThreadCopied(
            body["source_thread_id"],
            tuple(_put_from_avro(p) for p in body["checkpoints"]),
            tuple(_writes_from_avro(w) for w in body["writes"]),
        )
    if name == "chatlog.ThreadTouched":
        return ThreadTouched()
    if name == "chatlog.EventChunk":
        return EventChunk(body["group_id"], body["index"], body["count"], bytes(body["data"]))
    raise EventDecodeError(f"unknown checkpoint payload record {name!r}: upgrade chatlog")
