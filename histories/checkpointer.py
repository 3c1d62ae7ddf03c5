"""``ChatLogCheckpointSaver``: LangGraph short-term memory on the event log.

Every ``put``, ``put_writes`` and ``delete_thread`` is an event on the
checkpoint topic (``<topic>.checkpoints``), keyed by thread id; the projector
folds it into Redis and reads come from there in one round trip. Values are
serialized on the client in LangGraph's msgpack format (never pickle), so
the projector stores bytes and never imports LangGraph; every read decodes
them with a strict allowlist (:mod:`chatlog.histories.checkpoint_serde`).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatlog.errors import MessageTooLargeError, ProjectionLagError
from chatlog.histories.checkpoint_read_model import CheckpointReader, StoredEntry, ThreadSelection
from chatlog.histories.checkpoint_sealing import for_thread, sealed_serde, thread_of_config
from chatlog.histories.checkpoint_serde import checked_serde
from chatlog.histories.read_your_writes import (
    WrittenPositions,
    await_until_applied,
    projection_lag,
    wait_until_applied,
)
from chatlog.identifiers import validate_session_id
from chatlog.producers.admin import ensure_topic
from chatlog.producers.key_store import key_store_of
from chatlog.producers.producer import EncodedEvent, EventProducer, LogPosition
from chatlog.schemas.checkpoint_codec import CONTENT_TYPE, CheckpointCodec
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
from chatlog.settings import Settings


class ChatLogCheckpointSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer whose source of truth is the Kafka log.

    Writes return once the broker acknowledged the event. Reads through the
    same saver see its own writes (they wait until the projector applied
    them, up to ``read_timeout_s``, then raise
    :class:`~chatlog.errors.ProjectionLagError`); other readers see the
    thread eventually consistent. A projector (``chatlog projector run``)
    must be running. ``list``, ``get_tuple``, pending writes, namespaces and
    ``delete_thread`` behave like LangGraph's ``InMemorySaver``::

        with ChatLogCheckpointSaver(Settings.from_env()) as saver:
            graph = builder.compile(checkpointer=saver)

    Args:
        settings: Connections and topics; default ``Settings.from_env()``.
        producer: Producer to publish with (default: own one, closed by :meth:`close`).
        redis_client: Redis client to read with (default: from ``settings.redis_url``).
        serde: Serializer; default :class:`~chatlog.histories.checkpoint_serde.CheckpointSerializer`
            (LangGraph's format, read with a strict allowlist; a compiled
            graph's ``with_allowlist`` extends it).
        read_timeout_s: How long a read waits for this saver's own writes.
        allow_unsafe_serde: Accept a serializer that imports and calls any
            type a stored value names (e.g. LangGraph's default
            ``JsonPlusSerializer()``). Only safe when every writer of the
            checkpoint topic and of Redis is trusted.

    Raises:
        UnsafeInputError: ``serde`` loads pickle, or is permissive and
            ``allow_unsafe_serde`` is not set.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        producer: EventProducer | None = None,
        redis_client: redis.Redis | None = None,
        serde: SerializerProtocol | None = None,
        read_timeout_s: float | None = None,
        allow_unsafe_serde: bool = False,
    ) -> None:
        super().__init__(serde=checked_serde(serde, allow_unsafe_serde=allow_unsafe_serde))
        self.settings = settings or Settings.from_env()
        self.read_timeout_s = read_timeout_s or self.settings.read_timeout_s
        self._owns_redis = redis_client is None
        self.redis = redis_client or redis.Redis.from_url(self.settings.redis_url)
        self.reader = CheckpointReader(
            self.redis,
            self.settings.namespace,
            redis_url=self.settings.redis_url if self._owns_redis else None,
        )
        self.codec = CheckpointCodec()
        self.written = WrittenPositions()
        self._producer = producer
        self._owns_producer = producer is None
        # CHATLOG_ENCRYPTION_KEY: every value is sealed under its thread's data key.
        self._key_store = producer.key_store if producer is not None else key_store_of(
            self.settings
        )
        self.serde = sealed_serde(self.serde, self._key_store)
        self._topic_ready = False
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------

    @property
    def producer(self) -> EventProducer:
        """The producer, created (and the checkpoint topic ensured) on first use."""
        with self._lock:
            if not self._topic_ready:
                if self.settings.auto_create_topic:
                    ensure_topic(
                        self.settings.checkpoint_topic,
                        self.settings.partitions,
                        self.settings.replication_factor,
                        settings=self.settings,
                    )
                self._topic_ready = True
            if self._producer is None:
                self._producer = EventProducer(self.settings, key_store=self._key_store)
            return self._producer

    def close(self) -> None:
        """Flush and close what this saver created (its producer and Redis pool)."""
        with self._lock:
            if self._owns_producer and self._producer is not None:
                self._producer.close()
                self._producer = None
            if self._owns_producer and self._key_store is not None:
                self._key_store.close()
                self._key_store = None
        self.reader.close()
        if self._owns_redis:
            self.redis.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: the running loop's Redis client is closed before it returns."""
        await self.reader.aclose()
        self.close()

    def __enter__(self) -> ChatLogCheckpointSaver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------

    def _encode(self, thread_id: str, payload: CheckpointPayload) -> EncodedEvent:
        event = CheckpointEvent(thread_id, payload, source=self.settings.source)
        value = self.codec.encode(event)
        if len(value) > self.settings.max_event_bytes:
            raise MessageTooLargeError(
                f"checkpoint event for thread {thread_id!r} is {len(value)} bytes, over the "
                f"limit of {self.settings.max_event_bytes} (CHATLOG_MAX_EVENT_BYTES)"
            )
        headers = [
            ("event-type", event.event_type.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        return EncodedEvent(thread_id.encode("utf-8"), value, headers)

    def _publish(self, thread_id: str, record: EncodedEvent) -> None:
        positions = self.producer.send_encoded(self.settings.checkpoint_topic, [record])
        self.written.record(thread_id, positions)

    async def _apublish(self, thread_id: str, record: EncodedEvent) -> None:
        positions: list[LogPosition] = await self.producer.asend_encoded(
            self.settings.checkpoint_topic, [record]
        )
        self.written.record(thread_id, positions)

    def _typed(self, value: Any) -> TypedValue:
        kind, data = self.serde.dumps_typed(value)
        return TypedValue(kind, bytes(data))

    @for_thread(thread_of_config)
    def _put_event(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[str, EncodedEvent, RunnableConfig]:
        configurable = config["configurable"]
        thread_id = _thread_id(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        stripped = checkpoint.copy()
        values: dict[str, Any] = stripped.pop("channel_values")  # type: ignore[misc]
        put = CheckpointPut(
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint["id"],
            parent_checkpoint_id=configurable.get("checkpoint_id"),
            checkpoint=self._typed(stripped),
            metadata=self._typed(get_checkpoint_metadata(config, metadata)),
            channel_versions=tuple(
                ChannelVersion(channel, str(version))
                for channel, version in checkpoint["channel_versions"].items()
            ),
            blobs=tuple(
                ChannelBlob(
                    channel,
                    str(version),
                    self._typed(values[channel]) if channel in values else TypedValue("empty", b""),
                )
                for channel, version in new_versions.items()
            ),
        )
        next_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return thread_id, self._encode(thread_id, put), next_config

    @for_thread(thread_of_config)
    def _writes_event(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[str, EncodedEvent]:
        configurable = config["configurable"]
        thread_id = _thread_id(configurable["thread_id"])
        payload = WritesPut(
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=configurable["checkpoint_id"],
            task_id=task_id,
            task_path=task_path,
            writes=tuple(
                PendingWriteValue(WRITES_IDX_MAP.get(channel, index), channel, self._typed(value))
                for index, (channel, value) in enumerate(writes)
            ),
        )
        return thread_id, self._encode(thread_id, payload)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Publish a checkpoint with its metadata and new channel values; return its config.

        Raises:
            MessageTooLargeError: the event is over ``max_event_bytes`` (nothing published).
            PublishError: the broker did not acknowledge in time.
        """
        thread_id, record, next_config = self._put_event(config, checkpoint, metadata, new_versions)
        self._publish(thread_id, record)
        return next_config

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`; awaits the acknowledgement without blocking the loop."""
        thread_id, record, next_config = self._put_event(config, checkpoint, metadata, new_versions)
        await self._apublish(thread_id, record)
        return next_config

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Publish the pending writes of ``task_id`` against the checkpoint in ``config``."""
        thread_id, record = self._writes_event(config, writes, task_id, task_path)
        self._publish(thread_id, record)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes`."""
        thread_id, record = self._writes_event(config, writes, task_id, task_path)
        await self._apublish(thread_id, record)

    def delete_thread(self, thread_id: str) -> None:
        """Publish ``ThreadDeleted``: every checkpoint and write of the thread is gone.

        The events stay in the log (it is immutable), but no read model,
        replay or rebuild shows them again.
        """
        thread = _thread_id(thread_id)
        self._publish(thread, self._encode(thread, ThreadDeleted()))
        if self._key_store is not None:
            self._key_store.destroy(thread)  # crypto-shredding: after the tombstone

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        thread = _thread_id(thread_id)
        await self._apublish(thread, self._encode(thread, ThreadDeleted()))
        if self._key_store is not None:
            await asyncio.to_thread(self._key_store.destroy, thread)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The next channel version: an increasing counter with a random tiebreak, as text.

        Same scheme as LangGraph's ``InMemorySaver``; the zero-padded counter
        keeps versions ordered as strings.
        """
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- reads -------------------------------------------------------------------

    def _lag_error(self, thread_id: str, selection: ThreadSelection) -> ProjectionLagError:
        written = self.written.get(thread_id)
        assert written is not None
        return projection_lag(
            f"thread {thread_id!r}",
            written,
            selection,
            read_model="checkpoint read model",
            writer="saver",
            timeout_s=self.read_timeout_s,
            hint="is a projector running?",
            topic=self.settings.checkpoint_topic,
        )

    def _select(self, thread_id: str, **query: Any) -> ThreadSelection:
        return wait_until_applied(
            lambda: self.reader.select(thread_id, **query),
            lambda selection: self.written.covered(thread_id, selection),
            lambda selection: self._lag_error(thread_id, selection),
            self.read_timeout_s,
        )

    async def _aselect(self, thread_id: str, **query: Any) -> ThreadSelection:
        return await await_until_applied(
            lambda: self.reader.aselect(thread_id, **query),
            lambda selection: self.written.covered(thread_id, selection),
            lambda selection: self._lag_error(thread_id, selection),
            self.read_timeout_s,
        )

    def _loads(self, value: TypedValue) -> Any:
        return self.serde.loads_typed((value.type, value.data))

    @for_thread(str)
    def _tuple(self, thread_id: str, entry: StoredEntry) -> CheckpointTuple:
        checkpoint: Checkpoint = self._loads(entry.stored.checkpoint)
        writes = sorted(entry.writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        parent = entry.stored.parent_checkpoint_id
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": entry.checkpoint_ns,
                    "checkpoint_id": entry.checkpoint_id,
                }
            },
            checkpoint={
                **checkpoint,
                "channel_values": {ch: self._loads(v) for ch, v in entry.values.items()},
            },
            metadata=self._loads(entry.stored.metadata),
            parent_config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": entry.checkpoint_ns,
                    "checkpoint_id": parent,
                }
            }
            if parent
            else None,
            pending_writes=[(w.task_id, w.channel, self._loads(w.value)) for w in writes],
        )

    @staticmethod
    def _get_query(config: RunnableConfig) -> tuple[str, str | None, dict[str, Any]]:
        configurable = config["configurable"]
        checkpoint_id = get_checkpoint_id(config)
        query = {
            "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": checkpoint_id,
            "limit": 1,
        }
        return _thread_id(configurable["thread_id"]), checkpoint_id, query

    def _got(
        self,
        config: RunnableConfig,
        thread_id: str,
        checkpoint_id: str | None,
        sel: ThreadSelection,
    ) -> CheckpointTuple | None:
        if not sel.entries:
            return None
        found = self._tuple(thread_id, sel.entries[0])
        # LangGraph's savers hand back the caller's config when it named the checkpoint.
        return found._replace(config=config) if checkpoint_id else found

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (or the thread's latest in its namespace), or None."""
        thread_id, checkpoint_id, query = self._get_query(config)
        return self._got(config, thread_id, checkpoint_id, self._select(thread_id, **query))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        thread_id, checkpoint_id, query = self._get_query(config)
        return self._got(config, thread_id, checkpoint_id, await self._aselect(thread_id, **query))

    def _list_query(
        self,
        config: RunnableConfig | None,
        before: RunnableConfig | None,
        limit: int | None,
        has_filter: bool,
    ) -> dict[str, Any]:
        return {
            "checkpoint_ns": config["configurable"].get("checkpoint_ns") if config else None,
            "checkpoint_id": get_checkpoint_id(config) if config else None,
            "before": get_checkpoint_id(before) if before else None,
            # A metadata filter runs here, on deserialized metadata, so Redis
            # cannot stop early.
            "limit": None if has_filter else limit,
        }

    def _known_threads(self, found: list[str]) -> list[str]:
        return sorted(set(found) | set(self.written.sessions()))

    def _matches(self, entry: CheckpointTuple, filter: dict[str, Any] | None) -> bool:
        return not filter or all(entry.metadata.get(k) == v for k, v in filter.items())

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first within each namespace, like ``InMemorySaver.list``.

        Args:
            config: Thread (and optionally namespace and checkpoint id); ``None``
                lists every thread of the namespace (a SCAN, not one round trip).
            filter: Metadata key/value pairs a checkpoint must all have.
            before: Only checkpoints older than this checkpoint config.
            limit: At most this many checkpoints in total.
        """
        if limit is not None and limit <= 0:
            return
        threads = (
            [_thread_id(config["configurable"]["thread_id"])]
            if config
            else self._known_threads(self.reader.threads())
        )
        remaining = limit
        for thread_id in threads:
            query = self._list_query(config, before, remaining, bool(filter))
            for entry in self._select(thread_id, **query).entries:
                found = self._tuple(thread_id, entry)
                if not self._matches(found, filter):
                    continue
                yield found
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`."""
        if limit is not None and limit <= 0:
            return
        threads = (
            [_thread_id(config["configurable"]["thread_id"])]
            if config
            else self._known_threads(await self.reader.athreads())
        )
        remaining = limit
        for thread_id in threads:
            query = self._list_query(config, before, remaining, bool(filter))
            for entry in (await self._aselect(thread_id, **query)).entries:
                found = self._tuple(thread_id, entry)
                if not self._matches(found, filter):
                    continue
                yield found
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    def __repr__(self) -> str:
        return (
            f"ChatLogCheckpointSaver(topic={self.settings.checkpoint_topic!r}, "
            f"namespace={self.settings.namespace!r})"
        )


def _thread_id(value: Any) -> str:
    # LangGraph accepts any thread id value (ints, UUIDs); the log key is its text.
    return validate_session_id(str(value))
