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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeVar

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatlog.errors import (
    ChatLogError,
    ConfigurationError,
    EncryptionError,
    ThreadOwnershipError,
)
from chatlog.histories.checkpoint_lineage import Lineage, delta_history
from chatlog.histories.checkpoint_read_model import CheckpointReader, StoredEntry, ThreadSelection
from chatlog.histories.checkpoint_sealing import (
    SealingSerializer,
    for_thread,
    sealing_thread,
    thread_of_config,
)
from chatlog.histories.checkpoint_serde import checked_serde
from chatlog.histories.checkpoint_size import decompress, fit
from chatlog.histories.checkpoint_target_reader import CheckpointReading, open_checkpoint_reader
from chatlog.histories.read_your_writes import (
    WrittenPositions,
    await_until_applied,
    projection_lag,
    repairing_error,
    wait_until_applied,
)
from chatlog.histories.thread_index import IndexReply, ThreadInfo, run_checkpoints, thread_infos
from chatlog.histories.thread_operations import (
    KEEP_LATEST,
    PRUNE_STRATEGIES,
    copied,
    delta_channels,
    pruned,
    run_deletions,
)
from chatlog.identifiers import validate_session_id
from chatlog.producers.key_store import DataKeyStore
from chatlog.producers.lazy import LazyProducer
from chatlog.producers.producer import EncodedEvent, EventProducer, LogPosition, typed_encode
from chatlog.redis_clients import open_redis
from chatlog.schemas.checkpoint_codec import CONTENT_TYPE, CheckpointCodec
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    ChannelVersion,
    CheckpointEvent,
    CheckpointPayload,
    CheckpointPut,
    PendingWriteValue,
    ThreadDeleted,
    ThreadTouched,
    TypedValue,
    WritesPut,
)
from chatlog.settings import MAX_TTL_S, Settings

#: What a read of stored values returns (:meth:`ChatLogCheckpointSaver._aopened`).
R = TypeVar("R")


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

    The ``a*`` methods never block the event loop: reads go through
    redis.asyncio, and the producer's first use (checkpoint topic creation,
    bootstrap) and each hand-over of a record to the Kafka client run on a
    worker thread.

    Args:
        settings: Connections and topics; default ``Settings.from_env()``.
        producer: Producer to publish with, or a :class:`~chatlog.producers.lazy.LazyProducer`
            made on first use (default: own one, closed by :meth:`close`).
        redis_client: Redis client to read with (default: from ``settings.redis_url``).
            Unused when ``settings.read_model`` (``CHATLOG_READ_MODEL``) names a SQL
            store: the saver reads the checkpoint tables there, which
            ``chatlog projector run --target URL`` keeps.
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
        producer: EventProducer | LazyProducer | None = None,
        redis_client: redis.Redis | None = None,
        serde: SerializerProtocol | None = None,
        read_timeout_s: float | None = None,
        allow_unsafe_serde: bool = False,
    ) -> None:
        super().__init__(serde=checked_serde(serde, allow_unsafe_serde=allow_unsafe_serde))
        self.settings = settings or Settings.from_env()
        self.read_timeout_s = read_timeout_s or self.settings.read_timeout_s
        self._owns_redis = redis_client is None
        # CHATLOG_READ_MODEL naming a SQL store: reads go there, and no Redis is opened.
        read_model = self.settings.read_model
        target = open_checkpoint_reader(read_model) if read_model else None
        self.redis: redis.Redis | None = None
        self.reader: CheckpointReading
        if target is not None:
            self.reader = target
        else:
            self.redis = redis_client or open_redis(
                self.settings.redis_url, mode=self.settings.redis_mode
            )
            self.reader = CheckpointReader(
                self.redis,
                self.settings.namespace,
                redis_url=self.settings.redis_url if self._owns_redis else None,
            )
        self.codec = CheckpointCodec()
        self.written = WrittenPositions()
        self.producers = LazyProducer.of(
            producer, self.settings, topics=(self.settings.checkpoint_topic,)
        )
        # (thread, user) pairs whose ownership a write of this saver already checked.
        self._owners_checked: set[tuple[str, str]] = set()
        # CHATLOG_ENCRYPTION_KEY: every value is sealed under its thread's data key,
        # held by the producer's key store (made with the producer, on first use).
        self._sealing = (
            producer.key_store is not None
            if isinstance(producer, EventProducer)
            else bool(self.settings.encryption_key)
        )
        if self._sealing:
            self.serde = SealingSerializer(self.serde, self._key_store)

    # -- lifecycle -----------------------------------------------------------

    @property
    def producer(self) -> EventProducer:
        """The producer, created (and the checkpoint topic ensured) on first use."""
        return self.producers.get()

    def _key_store(self) -> DataKeyStore:
        """The producer's data keys (blocking: makes the producer on first use)."""
        key_store = self.producer.key_store
        if key_store is None:
            raise EncryptionError(
                "CHATLOG_ENCRYPTION_KEY is set for the checkpointer but its shared producer "
                "has no key store: give both the same settings"
            )
        return key_store

    def close(self) -> None:
        """Flush and close what this saver created (its producer and Redis pool)."""
        self.producers.close()
        self.reader.close()
        if self._owns_redis and self.redis is not None:
            self.redis.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: the running loop's Redis client is closed before it returns.

        The producer's flush and the sync pool's close run on a worker thread.
        """
        await self.reader.aclose()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> ChatLogCheckpointSaver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------

    def _encode(
        self,
        thread_id: str,
        payload: CheckpointPayload,
        config: RunnableConfig | None = None,
    ) -> list[EncodedEvent]:
        """The records of one call: one event, compressed or chunked (see checkpoint_size)."""
        configurable = config["configurable"] if config else {}
        event = CheckpointEvent(
            thread_id,
            payload,
            source=self.settings.source,
            user_id=_user_id(configurable),
            ttl_ms=self._ttl_ms(configurable) if config else None,
        )
        records = []
        for part, value in fit(
            event,
            lambda part: typed_encode(
                f"checkpoint event for thread {thread_id!r}", lambda: self.codec.encode(part)
            ),
            max_event_bytes=self.settings.max_event_bytes,
            max_checkpoint_bytes=self.settings.max_checkpoint_bytes,
        ):
            headers = [
                ("event-type", part.event_type.encode()),
                ("content-type", CONTENT_TYPE.encode()),
            ]
            records.append(EncodedEvent(thread_id.encode("utf-8"), value, headers))
        return records

    def _ttl_ms(self, configurable: Mapping[str, Any]) -> int | None:
        ttl_s = configurable.get("thread_ttl_s", self.settings.thread_ttl_s)
        if ttl_s is None:
            return None
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
            raise ConfigurationError(f"thread_ttl_s must be a number of seconds, got {ttl_s!r}")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ConfigurationError(
                f"thread_ttl_s must be positive and at most {MAX_TTL_S}, got {ttl_s}"
            )
        return int(ttl_s * 1000)

    def _publish(self, thread_id: str, records: list[EncodedEvent]) -> None:
        # One send: chunks of one event go out together and in order.
        positions = self.producer.send_encoded(self.settings.checkpoint_topic, records)
        self.written.record(thread_id, positions)

    async def _apublish(self, thread_id: str, records: list[EncodedEvent]) -> None:
        producer = await self.producers.aget()
        positions: list[LogPosition] = await producer.asend_encoded(
            self.settings.checkpoint_topic, records
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
    ) -> tuple[str, list[EncodedEvent], RunnableConfig]:
        configurable = config["configurable"]
        thread_id = _thread_id(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        stripped = checkpoint.copy()
        values: dict[str, Any] = stripped.pop("channel_values")  # type: ignore[misc]
        full_metadata = get_checkpoint_metadata(config, metadata)
        run_id = full_metadata.get("run_id")
        put = CheckpointPut(
            checkpoint_ns=checkpoint_ns,
            checkpoint_id=checkpoint["id"],
            parent_checkpoint_id=configurable.get("checkpoint_id"),
            checkpoint=self._typed(stripped),
            metadata=self._typed(full_metadata),
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
            run_id=str(run_id) if run_id is not None else None,
        )
        next_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return thread_id, self._encode(thread_id, put, config), next_config

    @for_thread(thread_of_config)
    def _writes_event(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[str, list[EncodedEvent]]:
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
        return thread_id, self._encode(thread_id, payload, config)

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
        thread_id, records, next_config = self._put_event(
            config, checkpoint, metadata, new_versions
        )
        self._check_owner_before_write(thread_id, config)
        self._publish(thread_id, records)
        return next_config

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`; awaits the acknowledgement without blocking the loop."""
        if self._sealing:
            # Sealing may make the producer or a data key: Kafka round trips, off the loop.
            thread_id, records, next_config = await asyncio.to_thread(
                self._put_event, config, checkpoint, metadata, new_versions
            )
        else:
            thread_id, records, next_config = self._put_event(
                config, checkpoint, metadata, new_versions
            )
        await self._acheck_owner_before_write(thread_id, config)
        await self._apublish(thread_id, records)
        return next_config

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Publish the pending writes of ``task_id`` against the checkpoint in ``config``."""
        thread_id, records = self._writes_event(config, writes, task_id, task_path)
        self._check_owner_before_write(thread_id, config)
        self._publish(thread_id, records)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes`."""
        if self._sealing:
            thread_id, records = await asyncio.to_thread(
                self._writes_event, config, writes, task_id, task_path
            )
        else:
            thread_id, records = self._writes_event(config, writes, task_id, task_path)
        await self._acheck_owner_before_write(thread_id, config)
        await self._apublish(thread_id, records)

    def delete_thread(self, thread_id: str) -> None:
        """Publish ``ThreadDeleted``: every checkpoint and write of the thread is gone.

        The events stay in the log (it is immutable), but no read model,
        replay or rebuild shows them again.
        """
        thread = _thread_id(thread_id)
        self._publish(thread, self._encode(thread, ThreadDeleted()))
        if self._sealing:
            self._key_store().destroy(thread)  # crypto-shredding: after the tombstone

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        thread = _thread_id(thread_id)
        await self._apublish(thread, self._encode(thread, ThreadDeleted()))
        if self._sealing:
            await asyncio.to_thread(lambda: self._key_store().destroy(thread))

    # -- thread maintenance: prune, copy, delete by run, per-user threads --------

    def prune(self, thread_ids: Sequence[str], *, strategy: str = KEEP_LATEST) -> None:
        """Drop old checkpoints of ``thread_ids``; each thread's change is one event.

        Args:
            thread_ids: Threads to prune (unknown ones are left alone).
            strategy: ``"keep_latest"`` keeps the newest checkpoint of each
                namespace with its pending writes (so pending interrupts
                survive), plus, for every ``DeltaChannel`` it still counts
                updates for, the ancestors back to that channel's nearest
                stored value, so delta channels rebuild exactly. ``"delete"``
                is :meth:`delete_thread` for each.

        Raises:
            ValueError: ``strategy`` is not one of the two.
        """
        _check_strategy(strategy)
        for raw in thread_ids:
            thread = _thread_id(raw)
            if strategy != KEEP_LATEST:
                self.delete_thread(thread)
                continue
            selection = self._select(thread, checkpoint_ns=None)
            walks = {
                entry.checkpoint_ns: self._lineage(thread, entry, channels)
                for entry, channels in self._delta_heads(thread, selection)
            }
            payload = pruned(selection, walks)
            if payload is not None:
                self._publish(thread, self._encode(thread, payload))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = KEEP_LATEST) -> None:
        """Async :meth:`prune`."""
        _check_strategy(strategy)
        for raw in thread_ids:
            thread = _thread_id(raw)
            if strategy != KEEP_LATEST:
                await self.adelete_thread(thread)
                continue
            selection = await self._aselect(thread, checkpoint_ns=None)
            heads = await self._aopened(thread, partial(self._delta_heads, thread, selection))
            walks = {
                entry.checkpoint_ns: await self._alineage(thread, entry, channels)
                for entry, channels in heads
            }
            payload = pruned(selection, walks)
            if payload is not None:
                await self._apublish(thread, self._encode(thread, payload))

    def _delta_heads(
        self, thread_id: str, selection: ThreadSelection
    ) -> list[tuple[StoredEntry, list[str]]]:
        """Each namespace's newest checkpoint with the delta channels its metadata counts."""
        heads: dict[str, StoredEntry] = {}
        for entry in selection.entries:
            heads.setdefault(entry.checkpoint_ns, entry)
        found = []
        with sealing_thread(thread_id):
            for entry in heads.values():
                channels = delta_channels(self._loads(entry.stored.metadata))
                if channels:
                    found.append((entry, channels))
        return found

    def _lineage(self, thread_id: str, entry: StoredEntry, channels: list[str]) -> Lineage:
        return self.reader.lineage(thread_id, entry.checkpoint_ns, entry.checkpoint_id, channels)

    async def _alineage(self, thread_id: str, entry: StoredEntry, channels: list[str]) -> Lineage:
        return await self.reader.alineage(
            thread_id, entry.checkpoint_ns, entry.checkpoint_id, channels
        )

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and pending write of the source thread to the target.

        One ``ThreadCopied`` event on the target carries the data as this
        saver reads it (after its own writes), so the whole parent chain is
        copied and the copy appears at once. The target's owner becomes the
        source's owner. A source with nothing in it copies nothing.
        """
        source, target = _thread_id(source_thread_id), _thread_id(target_thread_id)
        selection = self._select(source, checkpoint_ns=None)
        payload = copied(source, selection)
        if payload is not None:
            self._publish(target, self._encode(target, payload, _owner_config(selection.owner)))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        source, target = _thread_id(source_thread_id), _thread_id(target_thread_id)
        selection = await self._aselect(source, checkpoint_ns=None)
        payload = copied(source, selection)
        if payload is not None:
            config = _owner_config(selection.owner)
            await self._apublish(target, self._encode(target, payload, config))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint (with its writes) whose metadata names one of ``run_ids``.

        The projector indexes checkpoints by run id (``<ns>:r:{run}:checkpoints``),
        so no thread is scanned; each thread's deletion is one ``CheckpointsDeleted``
        event. A run whose checkpoints hold the only snapshot of a ``DeltaChannel``
        for a later run breaks that channel, as LangGraph warns.
        """
        runs = [str(run) for run in run_ids]
        if not runs:
            return
        reply = self._wait_for_index(lambda threads: self.reader.run_checkpoints(runs, threads))
        for thread, payload in run_deletions(run_checkpoints(reply)):
            self._publish(thread, self._encode(thread, payload))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        runs = [str(run) for run in run_ids]
        if not runs:
            return
        threads = self.written.sessions()
        reply = await await_until_applied(
            lambda: self.reader.arun_checkpoints(runs, threads),
            self._index_covered,
            self._index_lag,
            self.read_timeout_s,
        )
        for thread, payload in run_deletions(run_checkpoints(reply)):
            await self._apublish(thread, self._encode(thread, payload))

    def threads(self, user_id: str) -> list[ThreadInfo]:
        """The live threads ``user_id`` owns, newest activity first (one round trip, no SCAN)."""
        user = _required_user(user_id)
        reply = self._wait_for_index(lambda threads: self.reader.user_threads(user, threads))
        return thread_infos(reply)

    async def athreads(self, user_id: str) -> list[ThreadInfo]:
        """Async :meth:`threads`."""
        user = _required_user(user_id)
        threads = self.written.sessions()
        reply = await await_until_applied(
            lambda: self.reader.auser_threads(user, threads),
            self._index_covered,
            self._index_lag,
            self.read_timeout_s,
        )
        return thread_infos(reply)

    def delete_user_threads(self, user_id: str) -> list[str]:
        """Delete every thread ``user_id`` owns (``ThreadDeleted`` each); return their ids.

        :meth:`chatlog.ChatLog.delete_user` calls it, so erasing a user also
        erases their LangGraph state.
        """
        deleted = [info.thread_id for info in self.threads(user_id)]
        for thread in deleted:
            self.delete_thread(thread)
        return deleted

    async def adelete_user_threads(self, user_id: str) -> list[str]:
        """Async :meth:`delete_user_threads`."""
        deleted = [info.thread_id for info in await self.athreads(user_id)]
        for thread in deleted:
            await self.adelete_thread(thread)
        return deleted

    def _index_covered(self, reply: IndexReply) -> bool:
        return all(
            self.written.covered(thread, _Position(*reply.positions.get(thread, (None, -1))))
            for thread in self.written.sessions()
        )

    def _index_lag(self, reply: IndexReply) -> ChatLogError:
        for thread in self.written.sessions():
            applied = _Position(*reply.positions.get(thread, (None, -1)))
            if not self.written.covered(thread, applied):
                selection = ThreadSelection(applied.partition, applied.offset, [])
                return self._lag_error(thread, selection)
        raise AssertionError("index lag reported while every write is covered")

    def _wait_for_index(self, read: Any) -> IndexReply:
        threads = self.written.sessions()
        reply: IndexReply = wait_until_applied(
            lambda: read(threads), self._index_covered, self._index_lag, self.read_timeout_s
        )
        return reply

    # -- LangGraph DeltaChannel support -------------------------------------------

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Per channel, the on-path writes and nearest seed: the parent chain walked in Redis.

        One round trip (after this saver's own writes are applied) instead of
        one ``get_tuple`` per ancestor; same result as ``InMemorySaver``.
        """
        if not channels:
            return {}
        thread_id, checkpoint_ns, checkpoint_id = _address(config)
        walked = wait_until_applied(
            lambda: self.reader.lineage(thread_id, checkpoint_ns, checkpoint_id, list(channels)),
            lambda found: self.written.covered(thread_id, found),
            lambda found: self._lag_error(thread_id, _as_selection(found)),
            self.read_timeout_s,
        )
        self._check_owner(thread_id, config, walked.owner)
        with sealing_thread(thread_id):
            return delta_history(walked, channels, self._loads)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Async :meth:`get_delta_channel_history`."""
        if not channels:
            return {}
        thread_id, checkpoint_ns, checkpoint_id = _address(config)
        walked = await await_until_applied(
            lambda: self.reader.alineage(thread_id, checkpoint_ns, checkpoint_id, list(channels)),
            lambda found: self.written.covered(thread_id, found),
            lambda found: self._lag_error(thread_id, _as_selection(found)),
            self.read_timeout_s,
        )
        self._check_owner(thread_id, config, walked.owner)
        return await self._aopened(
            thread_id, lambda: delta_history(walked, channels, self._loads)
        )

    # -- ownership ------------------------------------------------------------------

    def _check_owner(
        self, thread_id: str, config: RunnableConfig | None, owner: str | None
    ) -> None:
        user = _user_id(config["configurable"]) if config else None
        if user is not None and owner is not None and owner != user:
            raise ThreadOwnershipError(
                f"thread {thread_id!r} belongs to another user, not {user!r}: use the owner's "
                "config or another thread id"
            )

    def _check_owner_before_write(self, thread_id: str, config: RunnableConfig) -> None:
        user = _user_id(config["configurable"])
        if user is None or (thread_id, user) in self._owners_checked:
            return
        selection = self._select(thread_id, checkpoint_ns="", limit=0)
        self._check_owner(thread_id, config, selection.owner)
        self._owners_checked.add((thread_id, user))

    async def _acheck_owner_before_write(self, thread_id: str, config: RunnableConfig) -> None:
        user = _user_id(config["configurable"])
        if user is None or (thread_id, user) in self._owners_checked:
            return
        selection = await self._aselect(thread_id, checkpoint_ns="", limit=0)
        self._check_owner(thread_id, config, selection.owner)
        self._owners_checked.add((thread_id, user))

    def _touch(self, thread_id: str, config: RunnableConfig) -> None:
        if self.settings.thread_ttl_refresh_on_read:
            self._publish(thread_id, self._encode(thread_id, ThreadTouched(), config))

    async def _atouch(self, thread_id: str, config: RunnableConfig) -> None:
        if self.settings.thread_ttl_refresh_on_read:
            await self._apublish(thread_id, self._encode(thread_id, ThreadTouched(), config))

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

    def _caught_up(self, thread_id: str, selection: ThreadSelection) -> bool:
        return not selection.repairing and self.written.covered(thread_id, selection)

    def _lag_error(self, thread_id: str, selection: ThreadSelection) -> ChatLogError:
        if selection.repairing:
            return repairing_error(
                f"thread {thread_id!r}", "the read model namespace is being repaired",
                self.read_timeout_s,
            )
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
            lambda selection: self._caught_up(thread_id, selection),
            lambda selection: self._lag_error(thread_id, selection),
            self.read_timeout_s,
        )

    async def _aselect(self, thread_id: str, **query: Any) -> ThreadSelection:
        return await await_until_applied(
            lambda: self.reader.aselect(thread_id, **query),
            lambda selection: self._caught_up(thread_id, selection),
            lambda selection: self._lag_error(thread_id, selection),
            self.read_timeout_s,
        )

    async def _aopened(self, thread_id: str, read: Callable[[], R]) -> R:
        """``read()``, which deserializes stored values of ``thread_id``, for an async method.

        With encryption on it runs off the event loop: opening a sealed value
        may first read the key store (a Kafka round trip for a key this
        process does not hold yet, or the store's lock while another thread
        publishes a key), and may first make the producer that owns the store.
        Without encryption it is CPU only and stays on the loop.
        """
        if not self._sealing:
            return read()

        def opened() -> R:
            with sealing_thread(thread_id):
                return read()

        return await asyncio.to_thread(opened)

    def _loads(self, value: TypedValue) -> Any:
        # Compressed values are inflated (bounded) and then read by the strict serde.
        plain = decompress(value, self.settings.max_checkpoint_bytes)
        return self.serde.loads_typed((plain.type, plain.data))

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

    def _tuples(self, thread_id: str, entries: list[StoredEntry]) -> list[CheckpointTuple]:
        return [self._tuple(thread_id, entry) for entry in entries]

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
        selection = self._select(thread_id, **query)
        self._check_owner(thread_id, config, selection.owner)
        self._touch(thread_id, config)
        return self._got(config, thread_id, checkpoint_id, selection)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        thread_id, checkpoint_id, query = self._get_query(config)
        selection = await self._aselect(thread_id, **query)
        self._check_owner(thread_id, config, selection.owner)
        await self._atouch(thread_id, config)
        return await self._aopened(
            thread_id, lambda: self._got(config, thread_id, checkpoint_id, selection)
        )

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
            selection = self._select(thread_id, **query)
            self._check_owner(thread_id, config, selection.owner)
            for entry in selection.entries:
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
            selection = await self._aselect(thread_id, **query)
            self._check_owner(thread_id, config, selection.owner)
            # One hop off the loop per selection (encrypted values), not per checkpoint.
            tuples = await self._aopened(
                thread_id, partial(self._tuples, thread_id, selection.entries)
            )
            for found in tuples:
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


def _user_id(configurable: Mapping[str, Any]) -> str | None:
    user = configurable.get("user_id")
    return None if user is None or user == "" else str(user)


def _required_user(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id:
        raise ConfigurationError(f"user_id must be a non-empty string, got {user_id!r}")
    return user_id


def _check_strategy(strategy: str) -> None:
    if strategy not in PRUNE_STRATEGIES:
        raise ValueError(
            f"prune strategy {strategy!r} is not one of {', '.join(PRUNE_STRATEGIES)}"
        )


def _address(config: RunnableConfig) -> tuple[str, str, str | None]:
    configurable = config["configurable"]
    return (
        _thread_id(configurable["thread_id"]),
        configurable.get("checkpoint_ns", ""),
        get_checkpoint_id(config),
    )


def _owner_config(owner: str | None) -> RunnableConfig | None:
    return {"configurable": {"user_id": owner}} if owner else None


def _as_selection(walked: Lineage) -> ThreadSelection:
    return ThreadSelection(walked.partition, walked.offset, [], walked.owner)


class _Position(NamedTuple):
    partition: int | None
    offset: int
