"""Checkpoint log events: what a LangGraph checkpointer wrote, one record per call.

These mirror ``schemas/avsc/chatlog.CheckpointEvent.v*.avsc`` field for field.
Checkpoints, metadata, channel values and pending writes travel as the
``(type, bytes)`` pairs the saver's serializer produced on the client
(LangGraph's ``JsonPlusSerializer``); nothing here imports LangGraph, because
the projector uses these classes and stores the bytes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Union

from chatlog.schemas.events import _event_id, _now


@dataclass(frozen=True, slots=True)
class TypedValue:
    """A value serialized by the saver's serde: its type tag and its bytes."""

    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelVersion:
    """One channel version a checkpoint refers to; versions travel as text."""

    channel: str
    version: str


@dataclass(frozen=True, slots=True)
class ChannelBlob:
    """The value of ``channel`` at ``version`` (type ``empty`` when the channel has none)."""

    channel: str
    version: str
    value: TypedValue


@dataclass(frozen=True, slots=True)
class CheckpointPut:
    """One checkpoint (without its channel values), its metadata and its new channel values."""

    checkpoint_ns: str
    checkpoint_id: str
    checkpoint: TypedValue
    metadata: TypedValue
    parent_checkpoint_id: str | None = None
    channel_versions: tuple[ChannelVersion, ...] = ()
    blobs: tuple[ChannelBlob, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingWriteValue:
    """One pending write: its index (negative for LangGraph's special channels) and value."""

    index: int
    channel: str
    value: TypedValue


@dataclass(frozen=True, slots=True)
class WritesPut:
    """The pending writes of one task against one checkpoint."""

    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    task_path: str = ""
    writes: tuple[PendingWriteValue, ...] = ()


@dataclass(frozen=True, slots=True)
class ThreadDeleted:
    """Every checkpoint and pending write of the thread before this event is gone."""


#: The payload of a :class:`CheckpointEvent`.
CheckpointPayload = Union[CheckpointPut, WritesPut, ThreadDeleted]  # noqa: UP007 - runtime alias


@dataclass(frozen=True, slots=True)
class CheckpointEvent:
    """One entry of the checkpoint log: an envelope around a payload, keyed by thread id."""

    thread_id: str
    payload: CheckpointPayload
    source: str | None = None
    event_id: str = field(default_factory=_event_id)
    occurred_at: datetime = field(default_factory=_now)

    @property
    def event_type(self) -> str:
        """Name of the payload record (``CheckpointPut``, ``WritesPut``, ``ThreadDeleted``)."""
        return type(self.payload).__name__
