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
    run_id: str | None = None


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


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """One checkpoint of a thread: its namespace and id."""

    checkpoint_ns: str
    checkpoint_id: str


@dataclass(frozen=True, slots=True)
class CheckpointsDeleted:
    """These checkpoints and their writes are gone (``prune`` keep_latest, ``delete_for_runs``).

    Channel values that no remaining checkpoint of the thread refers to go with them.
    """

    checkpoints: tuple[CheckpointRef, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ThreadCopied:
    """``copy_thread``: the source's checkpoints and writes, applied to this thread at once.

    The event carries the data (as the saver read it) rather than a reference,
    because the source thread may live on another partition: a replay must
    not depend on how far the source's partition has been read.
    """

    source_thread_id: str
    checkpoints: tuple[CheckpointPut, ...] = ()
    writes: tuple[WritesPut, ...] = ()


@dataclass(frozen=True, slots=True)
class ThreadTouched:
    """A read with refresh-on-read: the thread's expiry moves to this event's time plus its TTL."""


@dataclass(frozen=True, slots=True)
class EventChunk:
    """Part ``index`` of ``count`` of an encoded checkpoint event too large for one record."""

    group_id: str
    index: int
    count: int
    data: bytes


#: The payload of a :class:`CheckpointEvent`.
CheckpointPayload = Union[  # noqa: UP007 - runtime alias
    CheckpointPut,
    WritesPut,
    ThreadDeleted,
    CheckpointsDeleted,
    ThreadCopied,
    ThreadTouched,
    EventChunk,
]


@dataclass(frozen=True, slots=True)
class CheckpointEvent:
    """One entry of the checkpoint log: an envelope around a payload, keyed by thread id."""

    thread_id: str
    payload: CheckpointPayload
    source: str | None = None
    event_id: str = field(default_factory=_event_id)
    occurred_at: datetime = field(default_factory=_now)
    user_id: str | None = None
    ttl_ms: int | None = None

    @property
    def event_type(self) -> str:
        """Name of the payload record (``CheckpointPut``, ``WritesPut``, ``ThreadDeleted``, ...)."""
        return type(self.payload).__name__
