"""Fitting checkpoint events into records: compression, chunking and the typed refusal."""

from __future__ import annotations

import os

import pytest

from chatlog.errors import CheckpointTooLargeError, EventDecodeError
from chatlog.histories.checkpoint_size import COMPRESSED, compress, decompress, fit
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.checkpoint_events import (
    CheckpointEvent,
    EventChunk,
    PendingWriteValue,
    TypedValue,
    WritesPut,
)

CODEC = CheckpointCodec()


def _writes(channel: str, data: bytes) -> CheckpointEvent:
    value = TypedValue("bytes", data)
    return CheckpointEvent(
        "t", WritesPut("", "c", "task", "", (PendingWriteValue(0, channel, value),))
    )


def test_an_event_under_the_limit_is_one_record_unchanged() -> None:
    """Nothing is compressed or split when the event fits."""
    event = _writes("a", b"small")
    [(part, value)] = fit(event, CODEC.encode, max_event_bytes=1024, max_checkpoint_bytes=4096)
    assert part == event and CODEC.decode(value) == event


def test_a_compressible_event_becomes_one_compressed_record() -> None:
    """Repetitive values are zstd-compressed and tagged; decompression gives them back."""
    event = _writes("a", b"abc" * 100_000)
    [(part, value)] = fit(event, CODEC.encode, max_event_bytes=8192, max_checkpoint_bytes=1 << 20)
    assert len(value) <= 8192
    stored = part.payload.writes[0].value  # type: ignore[union-attr]
    assert stored.type == COMPRESSED + "bytes"
    assert decompress(stored, 1 << 20) == TypedValue("bytes", b"abc" * 100_000)


def test_an_incompressible_event_is_split_into_capped_chunks() -> None:
    """Chunks are each under the limit, share one group and rebuild the encoded event."""
    event = _writes("a", os.urandom(50_000))
    parts = fit(event, CODEC.encode, max_event_bytes=8192, max_checkpoint_bytes=1 << 20)
    chunks = [part.payload for part, _ in parts]
    assert all(isinstance(c, EventChunk) for c in chunks)
    assert all(len(value) <= 8192 for _, value in parts)
    assert len({c.group_id for c in chunks}) == 1  # type: ignore[union-attr]
    assert [c.index for c in chunks] == list(range(len(parts)))  # type: ignore[union-attr]
    rebuilt = CODEC.decode(b"".join(c.data for c in chunks))  # type: ignore[union-attr]
    assert rebuilt.payload == event.payload


def test_an_event_over_the_cap_is_refused_naming_its_largest_channel() -> None:
    """CheckpointTooLargeError carries the channel; nothing is returned to publish."""
    event = _writes("transcript", os.urandom(50_000))
    with pytest.raises(CheckpointTooLargeError, match="'transcript'") as raised:
        fit(event, CODEC.encode, max_event_bytes=8192, max_checkpoint_bytes=20_000)
    assert raised.value.channel == "transcript"


def test_decompression_is_bounded() -> None:
    """A value that inflates past the bound is refused, not expanded (a zstd bomb)."""
    bomb = TypedValue(COMPRESSED + "bytes", compress(b"\0" * 10_000_000))
    assert len(bomb.data) < 10_000
    with pytest.raises(EventDecodeError, match="expands past"):
        decompress(bomb, 1_000_000)
    with pytest.raises(EventDecodeError, match="corrupt"):
        decompress(TypedValue(COMPRESSED + "bytes", b"not zstd"), 1_000)
