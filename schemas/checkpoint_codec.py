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
    PendingWriteValue,
    ThreadDeleted,
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
        "payload": _payload_to_avro(event.payload),
    }


def _payload_to_avro(payload: CheckpointPayload) -> tuple[str, dict[str, Any]]:
    if isinstance(payload, CheckpointPut):
        return (
            "chatlog.CheckpointPut",
            {
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
            },
        )
    if isinstance(payload, WritesPut):
        return (
            "chatlog.WritesPut",
            {
                "checkpoint_ns": payload.checkpoint_ns,
                "checkpoint_id": payload.checkpoint_id,
                "task_id": payload.task_id,
                "task_path": payload.task_path,
                "writes": [
                    {"index": w.index, "channel": w.channel, "value": _typed(w.value)}
                    for w in payload.writes
                ],
            },
        )
    if isinstance(payload, ThreadDeleted):
        return ("chatlog.ThreadDeleted", {})
    raise TypeError(f"not a checkpoint payload event: {type(payload).__name__}")


def _event_from_avro(record: Any) -> CheckpointEvent:
    name, body = record["payload"]
    return CheckpointEvent(
        event_id=str(record["event_id"]),
        thread_id=record["thread_id"],
        source=record["source"],
        occurred_at=record["occurred_at"],
        payload=_payload_from_avro(name, body),
    )


def _value(body: dict[str, Any]) -> TypedValue:
    return TypedValue(body["type"], bytes(body["data"]))


def _payload_from_avro(name: str, body: dict[str, Any]) -> CheckpointPayload:
    if name == "chatlog.CheckpointPut":
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
        )
    if name == "chatlog.WritesPut":
        return WritesPut(
            checkpoint_ns=body["checkpoint_ns"],
            checkpoint_id=body["checkpoint_id"],
            task_id=body["task_id"],
            task_path=body["task_path"],
            writes=tuple(
                PendingWriteValue(w["index"], w["channel"], _value(w["value"]))
                for w in body["writes"]
            ),
        )
    if name == "chatlog.ThreadDeleted":
        return ThreadDeleted()
    raise EventDecodeError(f"unknown checkpoint payload record {name!r}: upgrade chatlog")
