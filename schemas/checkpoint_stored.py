"""The stored form of checkpoints in the read model, shared by the projector and the saver.

The projector never deserializes what the saver's serde produced; it frames
the ``(type, bytes)`` pairs of an event into Redis values and the saver
unframes them after one read. A frame is a sequence of fields, each a 4-byte
big-endian length and the bytes. Hash field names join their parts with NUL,
which appears in none of LangGraph's namespaces, ids, channels or versions.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import NamedTuple

from chatlog.errors import EventDecodeError
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    CheckpointPut,
    PendingWriteValue,
    TypedValue,
    WritesPut,
)

SEPARATOR = "\x00"
_LENGTH = struct.Struct(">I")


def pack(fields: Sequence[bytes]) -> bytes:
    """Frame ``fields`` into one value."""
    parts = []
    for value in fields:
        parts.append(_LENGTH.pack(len(value)))
        parts.append(value)
    return b"".join(parts)


def unpack(data: bytes) -> list[bytes]:
    """The fields of a frame made by :func:`pack`.

    Raises:
        EventDecodeError: ``data`` is not a complete frame.
    """
    fields, position, size = [], 0, len(data)
    while position < size:
        if position + 4 > size:
            raise EventDecodeError("corrupt stored checkpoint value: truncated length")
        (length,) = _LENGTH.unpack_from(data, position)
        position += 4
        if position + length > size:
            raise EventDecodeError("corrupt stored checkpoint value: truncated field")
        fields.append(data[position : position + length])
        position += length
    return fields


def checkpoint_member(checkpoint_ns: str, checkpoint_id: str) -> str:
    """Member of a thread's checkpoint index and field of its checkpoint hash."""
    return f"{checkpoint_ns}{SEPARATOR}{checkpoint_id}"


def blob_field(checkpoint_ns: str, channel: str, version: str) -> str:
    """Field of a thread's blob hash holding one channel value at one version."""
    return f"{checkpoint_ns}{SEPARATOR}{channel}{SEPARATOR}{version}"


def write_field(checkpoint_ns: str, checkpoint_id: str, task_id: str, index: int) -> str:
    """Field of a thread's pending-write hash: lex-sortable under its checkpoint member."""
    return f"{checkpoint_ns}{SEPARATOR}{checkpoint_id}{SEPARATOR}{task_id}{SEPARATOR}{index}"


def stored_checkpoint(put: CheckpointPut) -> bytes:
    """The checkpoint hash value: checkpoint and metadata pairs and the parent id."""
    return pack(
        [
            put.checkpoint.type.encode(),
            put.checkpoint.data,
            put.metadata.type.encode(),
            put.metadata.data,
            (put.parent_checkpoint_id or "").encode(),
        ]
    )


def stored_versions(put: CheckpointPut) -> str:
    """JSON array ``[channel, blob field, ...]`` of the blobs the checkpoint refers to.

    JSON because the read script decodes it (Redis Lua ships ``cjson``) to
    fetch the blobs in the same round trip.
    """
    flat: list[str] = []
    for version in put.channel_versions:
        flat.append(version.channel)
        flat.append(blob_field(put.checkpoint_ns, version.channel, version.version))
    return json.dumps(flat)


def stored_blob(put: CheckpointPut, blob: ChannelBlob) -> tuple[str, bytes]:
    """Field and value of one channel blob."""
    return (
        blob_field(put.checkpoint_ns, blob.channel, blob.version),
        pack([blob.value.type.encode(), blob.value.data]),
    )


def stored_write(writes: WritesPut, write: PendingWriteValue) -> tuple[str, bytes]:
    """Field and value of one pending write."""
    return (
        write_field(writes.checkpoint_ns, writes.checkpoint_id, writes.task_id, write.index),
        pack(
            [
                writes.task_id.encode(),
                str(write.index).encode(),
                write.channel.encode(),
                write.value.type.encode(),
                write.value.data,
                writes.task_path.encode(),
            ]
        ),
    )


class StoredCheckpoint(NamedTuple):
    """A checkpoint as read back: serialized checkpoint and metadata, and the parent id."""

    checkpoint: TypedValue
    metadata: TypedValue
    parent_checkpoint_id: str | None


class StoredWrite(NamedTuple):
    """A pending write as read back."""

    task_id: str
    idx: int
    channel: str
    value: TypedValue
    task_path: str


def read_checkpoint(data: bytes) -> StoredCheckpoint:
    """Parse a checkpoint hash value."""
    fields = unpack(data)
    if len(fields) != 5:
        raise EventDecodeError(f"corrupt stored checkpoint: {len(fields)} fields, expected 5")
    ctype, cdata, mtype, mdata, parent = fields
    return StoredCheckpoint(
        TypedValue(ctype.decode(), cdata),
        TypedValue(mtype.decode(), mdata),
        parent.decode() or None,
    )


def read_blob(data: bytes) -> TypedValue:
    """Parse a blob hash value."""
    fields = unpack(data)
    if len(fields) != 2:
        raise EventDecodeError(f"corrupt stored channel value: {len(fields)} fields, expected 2")
    return TypedValue(fields[0].decode(), fields[1])


def read_write(data: bytes) -> StoredWrite:
    """Parse a pending-write hash value."""
    fields = unpack(data)
    if len(fields) != 6:
        raise EventDecodeError(f"corrupt stored pending write: {len(fields)} fields, expected 6")
    task_id, index, channel, vtype, vdata, task_path = fields
    return StoredWrite(
        task_id.decode(),
        int(index),
        channel.decode(),
        TypedValue(vtype.decode(), vdata),
        task_path.decode(),
    )
