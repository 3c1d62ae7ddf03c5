"""The checkpoint event codec and the stored checkpoint framing."""

from __future__ import annotations

import dataclasses

import pytest

from chatlog.errors import EventDecodeError
from chatlog.schemas.checkpoint_codec import CheckpointCodec
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
from chatlog.schemas.checkpoint_stored import (
    pack,
    read_blob,
    read_checkpoint,
    read_write,
    stored_blob,
    stored_checkpoint,
    stored_write,
    unpack,
)
from chatlog.schemas.codec import SchemaRegistry
from chatlog.schemas.events import ChatEvent, SessionCleared

PUT = CheckpointPut(
    checkpoint_ns="child:1",
    checkpoint_id="1ef-checkpoint",
    parent_checkpoint_id="1ef-parent",
    checkpoint=TypedValue("msgpack", b"\x81\xa1v\x04"),
    metadata=TypedValue("msgpack", b"\x80"),
    channel_versions=(ChannelVersion("messages", "00000002.5"),),
    blobs=(
        ChannelBlob("messages", "00000002.5", TypedValue("msgpack", b"\x90")),
        ChannelBlob("gone", "00000001.1", TypedValue("empty", b"")),
    ),
)
WRITES = WritesPut(
    "",
    "1ef-checkpoint",
    "task-1",
    "path",
    (
        PendingWriteValue(0, "messages", TypedValue("msgpack", b"\x01")),
        PendingWriteValue(-1, "__error__", TypedValue("json", b'"boom"')),
    ),
)


PAYLOADS: list[CheckpointPayload] = [
    PUT,
    dataclasses.replace(PUT, run_id="run-1"),
    WRITES,
    ThreadDeleted(),
    CheckpointsDeleted((CheckpointRef("", "a"), CheckpointRef("child:1", "b")), "keep_latest"),
    ThreadCopied("source", (PUT,), (WRITES,)),
    ThreadTouched(),
    EventChunk("group", 1, 3, b"\x00\x01"),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_every_checkpoint_event_round_trips(payload: CheckpointPayload) -> None:
    """Encoding then decoding gives the same event, bytes, owner and TTL included."""
    codec = CheckpointCodec()
    event = CheckpointEvent("thread-1", payload, source="app", user_id="alice", ttl_ms=60_000)
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize("payload", [PUT, WRITES, ThreadDeleted()], ids=lambda p: type(p).__name__)
def test_version_1_events_still_decode(payload: CheckpointPayload) -> None:
    """An event written with CheckpointEvent v1 reads back under v2 with the new fields unset."""
    registry = SchemaRegistry()
    v1 = [v for v in registry.versions if v.name == "chatlog.CheckpointEvent" and v.version == 1]
    old_writer = CheckpointCodec(SchemaRegistry([*v1, registry.latest]))
    event = CheckpointEvent("thread-1", payload, source="app")
    data = old_writer.encode(event)
    assert data[2:10] == v1[0].fingerprint
    decoded = CheckpointCodec().decode(data)
    assert decoded == event
    assert decoded.user_id is None and decoded.ttl_ms is None


def test_checkpoint_events_use_their_own_schema_family() -> None:
    """The header names the CheckpointEvent schema; the chat codec still writes ChatEvent."""
    registry = SchemaRegistry()
    data = CheckpointCodec(registry).encode(CheckpointEvent("t", ThreadDeleted()))
    assert data[2:10] == registry.latest_of("chatlog.CheckpointEvent").fingerprint
    assert registry.latest.name == "chatlog.ChatEvent"


def test_a_chat_event_is_not_a_checkpoint_event() -> None:
    """Decoding a ChatEvent as a checkpoint event fails with a clear error."""
    from chatlog.schemas.codec import EventCodec

    data = EventCodec().encode(ChatEvent("s", SessionCleared()))
    with pytest.raises(EventDecodeError, match="wrong topic"):
        CheckpointCodec().decode(data)


def test_stored_values_read_back_what_the_event_carried() -> None:
    """The projector's framing of checkpoints, blobs and writes reads back loss-free."""
    checkpoint = read_checkpoint(stored_checkpoint(PUT))
    assert checkpoint == (PUT.checkpoint, PUT.metadata, "1ef-parent")
    field, blob = stored_blob(PUT, PUT.blobs[0])
    assert field == "child:1\x00messages\x0000000002.5"
    assert read_blob(blob) == PUT.blobs[0].value
    field, write = stored_write(WRITES, WRITES.writes[1])
    assert field == "\x001ef-checkpoint\x00task-1\x00-1"
    assert read_write(write) == ("task-1", -1, "__error__", TypedValue("json", b'"boom"'), "path")


def test_a_truncated_frame_is_a_decode_error() -> None:
    """Corrupt stored values raise EventDecodeError instead of returning garbage."""
    framed = pack([b"abc", b""])
    assert unpack(framed) == [b"abc", b""]
    with pytest.raises(EventDecodeError, match="truncated"):
        unpack(framed[:-1] + b"\x00\x00")
    with pytest.raises(EventDecodeError, match="truncated"):
        unpack(framed[:5])
