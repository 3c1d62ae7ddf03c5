"""Fitting checkpoint events into records: zstd compression, then chunks, or a refusal.

A checkpoint event over ``max_event_bytes`` first has its serialized values
compressed with zstd (the type tag becomes ``zstd+<tag>``; the projector
stores the bytes as they are and only a reader decompresses). Still too
large, it is split into ``EventChunk`` records that the saver publishes in
one send and the projector applies all at once when the last one arrives.
Over ``max_checkpoint_bytes`` it is refused with
:class:`~chatlog.errors.CheckpointTooLargeError` before anything is published.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import zstandard

from chatlog.errors import CheckpointTooLargeError, EventDecodeError
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    CheckpointEvent,
    CheckpointPayload,
    CheckpointPut,
    EventChunk,
    PendingWriteValue,
    ThreadCopied,
    TypedValue,
    WritesPut,
)

#: Type tag prefix of a compressed value.
COMPRESSED = "zstd+"
#: Values smaller than this stay as they are: zstd's frame costs more than it saves.
MIN_COMPRESS_BYTES = 256
#: Room each chunk record leaves for its envelope (ids, thread id, Avro framing).
CHUNK_ENVELOPE_BYTES = 1024


def compress(data: bytes) -> bytes:
    """zstd-compress ``data`` (level 3)."""
    return zstandard.ZstdCompressor(level=3).compress(data)


def decompress(value: TypedValue, max_bytes: int) -> TypedValue:
    """The value as serialized, decompressed if it was compressed.

    Raises:
        EventDecodeError: the frame is corrupt or would decompress to more
            than ``max_bytes`` (a decompression bomb).
    """
    if not value.type.startswith(COMPRESSED):
        return value
    try:
        # Read one byte past the bound instead of trusting the frame's size field.
        with zstandard.ZstdDecompressor().stream_reader(value.data) as reader:
            data = reader.read(max_bytes + 1)
    except zstandard.ZstdError as exc:
        raise EventDecodeError(f"corrupt compressed checkpoint value: {exc}") from exc
    if len(data) > max_bytes:
        raise EventDecodeError(
            f"compressed checkpoint value expands past {max_bytes} bytes: refused"
        )
    return TypedValue(value.type[len(COMPRESSED) :], data)


def _squeezed(value: TypedValue) -> TypedValue:
    if len(value.data) < MIN_COMPRESS_BYTES or value.type.startswith(COMPRESSED):
        return value
    packed = compress(value.data)
    return TypedValue(COMPRESSED + value.type, packed) if len(packed) < len(value.data) else value


def _squeeze_put(put: CheckpointPut) -> CheckpointPut:
    return dataclasses.replace(
        put,
        checkpoint=_squeezed(put.checkpoint),
        metadata=_squeezed(put.metadata),
        blobs=tuple(ChannelBlob(b.channel, b.version, _squeezed(b.value)) for b in put.blobs),
    )


def _squeeze_writes(writes: WritesPut) -> WritesPut:
    return dataclasses.replace(
        writes,
        writes=tuple(
            PendingWriteValue(w.index, w.channel, _squeezed(w.value)) for w in writes.writes
        ),
    )


def compressed(payload: CheckpointPayload) -> CheckpointPayload:
    """``payload`` with every value worth it compressed."""
    if isinstance(payload, CheckpointPut):
        return _squeeze_put(payload)
    if isinstance(payload, WritesPut):
        return _squeeze_writes(payload)
    if isinstance(payload, ThreadCopied):
        return dataclasses.replace(
            payload,
            checkpoints=tuple(_squeeze_put(p) for p in payload.checkpoints),
            writes=tuple(_squeeze_writes(w) for w in payload.writes),
        )
    return payload


def largest_channel(payload: CheckpointPayload) -> tuple[str, int]:
    """The channel (or ``checkpoint``/``metadata``) with the largest value, and its size."""
    sizes: list[tuple[int, str]] = [(0, "(none)")]
    puts: list[CheckpointPut] = []
    writes: list[WritesPut] = []
    if isinstance(payload, CheckpointPut):
        puts.append(payload)
    elif isinstance(payload, WritesPut):
        writes.append(payload)
    elif isinstance(payload, ThreadCopied):
        puts.extend(payload.checkpoints)
        writes.extend(payload.writes)
    for put in puts:
        sizes.append((len(put.checkpoint.data), "checkpoint"))
        sizes.append((len(put.metadata.data), "metadata"))
        sizes.extend((len(b.value.data), b.channel) for b in put.blobs)
    for call in writes:
        sizes.extend((len(w.value.data), w.channel) for w in call.writes)
    size, channel = max(sizes)
    return channel, size


def fit(
    event: CheckpointEvent,
    encode: Callable[[CheckpointEvent], bytes],
    *,
    max_event_bytes: int,
    max_checkpoint_bytes: int,
) -> list[tuple[CheckpointEvent, bytes]]:
    """The records to publish for ``event``: itself, compressed, or chunks of it.

    Raises:
        CheckpointTooLargeError: even compressed it is over ``max_checkpoint_bytes``
            (or chunks cannot fit ``max_event_bytes``); nothing was published.
    """
    value = encode(event)
    if len(value) <= max_event_bytes:
        return [(event, value)]
    event = dataclasses.replace(event, payload=compressed(event.payload))
    value = encode(event)
    if len(value) <= max_event_bytes:
        return [(event, value)]
    chunk_bytes = max_event_bytes - CHUNK_ENVELOPE_BYTES - len(event.thread_id.encode())
    if len(value) > max_checkpoint_bytes or chunk_bytes < CHUNK_ENVELOPE_BYTES:
        channel, size = largest_channel(event.payload)
        raise CheckpointTooLargeError(
            f"{event.event_type} of thread {event.thread_id!r} is {len(value)} bytes compressed, "
            f"over CHATLOG_MAX_CHECKPOINT_BYTES={max_checkpoint_bytes} (or "
            f"CHATLOG_MAX_EVENT_BYTES={max_event_bytes} is too small to split it); its largest "
            f"value is channel {channel!r} ({size} bytes): keep less in that channel",
            channel=channel,
        )
    group = uuid.uuid4().hex
    pieces = [value[i : i + chunk_bytes] for i in range(0, len(value), chunk_bytes)]
    records = []
    for index, piece in enumerate(pieces):
        chunk: Any = EventChunk(group, index, len(pieces), piece)
        part = CheckpointEvent(
            event.thread_id,
            chunk,
            source=event.source,
            occurred_at=event.occurred_at,
            user_id=event.user_id,
            ttl_ms=event.ttl_ms,
        )
        records.append((part, encode(part)))
    return records
