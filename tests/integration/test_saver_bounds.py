"""The saver's bounds: thread TTL by event time, size (compression, chunks, refusal), retries.

Real broker, real Redis, one projector for the module. Expiry rules are also
driven through the projection's apply step directly with events dated in the
past, which is what a replay of an old log does.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint

from chatlog import Settings
from chatlog.errors import CheckpointTooLargeError
from chatlog.histories.checkpoint_read_model import CheckpointReader
from chatlog.histories.checkpoint_serde import CheckpointSerializer
from chatlog.histories.checkpoint_size import fit
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector import Projector
from chatlog.projector.checkpoint_projection import CheckpointProjection, CheckpointRecord
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    ChannelVersion,
    CheckpointEvent,
    CheckpointPut,
    EventChunk,
    TypedValue,
)
from tests.helpers import delete_namespace, read_topic, unique

SETTINGS_OVERRIDES = {"partitions": 2}
HOUR_MS = 3_600_000


@pytest.fixture
def scratch(redis_client: redis.Redis) -> Iterator[str]:
    """A namespace of its own for driving the projection directly."""
    namespace = f"test:{uuid.uuid4().hex[:10]}"
    yield namespace
    delete_namespace(redis_client, namespace)


def _config(thread_id: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", **extra}}


def _put(checkpoint_id: str, value: Any = "v") -> CheckpointPut:
    serde = CheckpointSerializer()
    checkpoint = {**empty_checkpoint(), "id": checkpoint_id}
    del checkpoint["channel_values"]
    kind, data = serde.dumps_typed(value)
    return CheckpointPut(
        checkpoint_ns="",
        checkpoint_id=checkpoint_id,
        checkpoint=TypedValue(*serde.dumps_typed(checkpoint)),
        metadata=TypedValue(*serde.dumps_typed({})),
        channel_versions=(ChannelVersion("ch", "1"),),
        blobs=(ChannelBlob("ch", "1", TypedValue(kind, data)),),
    )


def _record(offset: int, thread: str, payload: Any, at: datetime, **envelope: Any) -> Any:
    event = CheckpointEvent(thread, payload, occurred_at=at, **envelope)
    return CheckpointRecord(0, offset, event)


def _ids(reader: CheckpointReader, thread: str) -> list[str]:
    return [e.checkpoint_id for e in reader.select(thread, checkpoint_ns="").entries]


def test_expiry_follows_event_time_and_replay_never_resurrects(
    redis_client: redis.Redis, scratch: str
) -> None:
    """A thread expired by event time is gone (tombstone kept), in live apply and in replay."""
    now = datetime.now(UTC)
    records = [
        _record(0, "t", _put("cp1"), now - timedelta(hours=3), user_id="u", ttl_ms=HOUR_MS),
        _record(1, "t", _put("cp2"), now - timedelta(minutes=30), user_id="u"),
    ]
    for namespace in (scratch, f"{scratch}-replayed"):
        projection = CheckpointProjection(redis_client, namespace)
        reader = CheckpointReader(redis_client, namespace)
        assert projection.apply(records[:1]).applied == 1
        assert _ids(reader, "t") == []
        assert reader.user_threads("u", []).entries == []
        meta = reader.keys.thread("t").meta
        assert int(redis_client.hget(meta, "expiry") or 0) > 0  # the tombstone
        assert projection.apply(records[1:]).applied == 1
        # cp1 had expired before cp2 was written: only cp2 lives, with the thread's TTL.
        assert _ids(reader, "t") == ["cp2"]
        expiry = int(redis_client.hget(meta, "expiry") or 0)
        assert expiry == int(records[1].event.occurred_at.timestamp() * 1000) + HOUR_MS
        assert redis_client.pttl(reader.keys.thread("t").checkpoints) > 0
        assert [t for t, _ in reader.user_threads("u", []).entries] == ["t"]
    delete_namespace(redis_client, f"{scratch}-replayed")


def test_thread_ttl_setting_override_and_refresh_on_read(
    module_settings: Settings, module_projector: Projector, redis_client: redis.Redis
) -> None:
    """CHATLOG_THREAD_TTL sets the expiry, thread_ttl_s overrides it, reads can refresh it."""
    settings = dataclasses.replace(
        module_settings, thread_ttl_s=3600, thread_ttl_refresh_on_read=True
    )
    default, custom = unique("ttl"), unique("ttl-custom")
    with ChatLogCheckpointSaver(settings) as saver:
        checkpoint = create_checkpoint(empty_checkpoint(), None, 1)
        saver.put(_config(default), checkpoint, {}, {})
        saver.put(_config(custom, thread_ttl_s=7200), checkpoint, {}, {})
        assert saver.get_tuple(_config(default)) is not None
        assert saver.get_tuple(_config(custom, thread_ttl_s=7200)) is not None
        keys = saver.reader.keys
        first = int(redis_client.hget(keys.thread(default).meta, "expiry") or 0)
        assert int(redis_client.hget(keys.thread(default).meta, "ttl_ms") or 0) == 3_600_000
        assert int(redis_client.hget(keys.thread(custom).meta, "ttl_ms") or 0) == 7_200_000
        assert 0 < redis_client.pttl(keys.thread(default).checkpoints) <= 3_600_000
        assert 3_600_000 < redis_client.pttl(keys.thread(custom).checkpoints) <= 7_200_000
        # The first get_tuple published a ThreadTouched; this read waits for it.
        assert saver.get_tuple(_config(default)) is not None
        assert int(redis_client.hget(keys.thread(default).meta, "expiry") or 0) >= first
    touched = [
        r
        for r in read_topic(settings, settings.checkpoint_topic)
        if r.key == default.encode() and dict(r.headers)["event-type"] == b"ThreadTouched"
    ]
    assert len(touched) == 2  # one per read of the thread


def test_large_checkpoints_are_compressed_or_chunked_and_read_back(
    module_settings: Settings, module_projector: Projector
) -> None:
    """Over max_event_bytes: compressed into one record, else chunks; reads get the value."""
    settings = dataclasses.replace(module_settings, max_event_bytes=64 * 1024)
    compressible, random_bytes = unique("zstd"), unique("chunks")
    repetitive = "word " * 200_000
    noise = os.urandom(300_000)
    with ChatLogCheckpointSaver(settings) as saver:
        for thread, value in ((compressible, repetitive), (random_bytes, noise)):
            checkpoint = create_checkpoint(empty_checkpoint(), None, 1)
            checkpoint["channel_values"] = {"big": value}
            checkpoint["channel_versions"] = {"big": saver.get_next_version(None, None)}
            saver.put(_config(thread), checkpoint, {}, checkpoint["channel_versions"])
            found = saver.get_tuple(_config(thread))
            assert found is not None
            assert found.checkpoint["channel_values"]["big"] == value
    records = read_topic(settings, settings.checkpoint_topic)
    per_thread = {
        t: [r for r in records if r.key == t.encode()] for t in (compressible, random_bytes)
    }
    assert len(per_thread[compressible]) == 1
    assert len(per_thread[compressible][0].value) < 64 * 1024
    assert len(per_thread[random_bytes]) == 5
    assert all(len(r.value) <= 64 * 1024 for r in per_thread[random_bytes])


def test_a_checkpoint_over_the_cap_is_refused_before_anything_is_published(
    module_settings: Settings, module_projector: Projector
) -> None:
    """CheckpointTooLargeError names the channel; the thread has no record on the log."""
    settings = dataclasses.replace(
        module_settings, max_event_bytes=64 * 1024, max_checkpoint_bytes=256 * 1024
    )
    thread = unique("refused")
    with ChatLogCheckpointSaver(settings) as saver:
        checkpoint = create_checkpoint(empty_checkpoint(), None, 1)
        checkpoint["channel_values"] = {"small": "ok", "huge": os.urandom(400_000)}
        versions = {"small": "1", "huge": "1"}
        checkpoint["channel_versions"] = versions
        with pytest.raises(CheckpointTooLargeError) as raised:
            saver.put(_config(thread), checkpoint, {}, versions)
        assert raised.value.channel == "huge"
        assert "'huge'" in str(raised.value)
        with pytest.raises(CheckpointTooLargeError):
            saver.put_writes(
                _config(thread, checkpoint_id="x"), [("huge", os.urandom(400_000))], "t"
            )
    records = read_topic(settings, settings.checkpoint_topic)
    assert [r for r in records if r.key == thread.encode()] == []


def test_a_chunked_checkpoint_appears_only_when_complete(
    redis_client: redis.Redis, scratch: str
) -> None:
    """Parts before the last change nothing a reader sees; the last applies the whole event."""
    codec = CheckpointCodec()
    event = CheckpointEvent("t", _put("cp1", os.urandom(200_000)))
    parts = fit(event, codec.encode, max_event_bytes=64 * 1024, max_checkpoint_bytes=1 << 20)
    assert len(parts) == 4
    assert all(isinstance(part.payload, EventChunk) for part, _ in parts)
    records = [CheckpointRecord(0, i, codec.decode(value)) for i, (_, value) in enumerate(parts)]
    projection = CheckpointProjection(redis_client, scratch)
    reader = CheckpointReader(redis_client, scratch)
    assert projection.apply(records[:2]).applied == 2
    assert _ids(reader, "t") == []
    # The last parts come in a later batch: the earlier ones are read back from Redis.
    assert projection.apply(records[2:]).applied == 2
    entries = reader.select("t", checkpoint_ns="").entries
    assert [e.checkpoint_id for e in entries] == ["cp1"]
    assert redis_client.hlen(reader.keys.thread("t").chunks) == 0
    serde = CheckpointSerializer()
    stored = entries[0].values["ch"]
    original = event.payload.blobs[0].value  # type: ignore[union-attr]
    assert serde.loads_typed((stored.type, stored.data)) == serde.loads_typed(
        (original.type, original.data)
    )
    # Redelivery of the whole group after it was applied changes nothing.
    assert projection.apply(records).skipped == 4


def test_retried_put_and_put_writes_leave_the_thread_as_one_call(
    module_saver: ChatLogCheckpointSaver, redis_client: redis.Redis
) -> None:
    """The same put and put_writes published twice store exactly what one call stores."""
    once, twice = unique("once"), unique("twice")
    checkpoint = create_checkpoint(empty_checkpoint(), None, 1)
    checkpoint["channel_values"] = {"a": "x"}
    checkpoint["channel_versions"] = {"a": "1"}
    writes = [("a", "w1"), ("__error__", "boom")]
    for thread, times in ((once, 1), (twice, 2)):
        for _ in range(times):
            config = module_saver.put(
                _config(thread, user_id="u"), checkpoint, {"step": 1}, {"a": "1"}
            )
            module_saver.put_writes(config, writes, "task-1")
        assert module_saver.get_tuple(_config(thread)) is not None

    def state(thread: str) -> list[Any]:
        keys = module_saver.reader.keys.thread(thread)
        return [
            redis_client.zrange(keys.index, 0, -1),
            redis_client.hgetall(keys.checkpoints),
            redis_client.hgetall(keys.versions),
            redis_client.hgetall(keys.blobs),
            redis_client.hgetall(keys.writes),
            redis_client.zrange(keys.write_index, 0, -1),
            redis_client.zrange(keys.namespaces, 0, -1),
        ]

    assert state(twice) == state(once)
    assert [t.thread_id for t in module_saver.threads("u")].count(twice) == 1


def test_late_writes_after_delete_thread_recreate_like_in_memory_saver(
    module_saver: ChatLogCheckpointSaver,
) -> None:
    """A put after delete_thread starts the thread again; the deleted history stays gone."""
    thread = unique("late")
    first = create_checkpoint(empty_checkpoint(), None, 1)
    config = module_saver.put(_config(thread), first, {}, {})
    module_saver.delete_thread(thread)
    module_saver.put_writes(config, [("a", "late")], "task")
    assert module_saver.get_tuple(_config(thread)) is None
    second = create_checkpoint(first, None, 2)
    module_saver.put(config, second, {}, {})
    found = module_saver.get_tuple(_config(thread))
    assert found is not None and found.checkpoint["id"] == second["id"]
    assert [t.checkpoint["id"] for t in module_saver.list(_config(thread))] == [second["id"]]


def test_the_projector_refuses_another_users_event(redis_client: redis.Redis, scratch: str) -> None:
    """An event whose user is not the thread's owner is a refusal; nothing of it is applied."""
    now = datetime.now(UTC)
    projection = CheckpointProjection(redis_client, scratch)
    reader = CheckpointReader(redis_client, scratch)
    owned = projection.apply([_record(0, "t", _put("cp1"), now, user_id="alice")])
    forged = projection.apply([_record(1, "t", _put("cp2"), now, user_id="mallory")])
    assert (owned.applied, forged.applied, forged.refused) == (1, 0, 1)
    assert _ids(reader, "t") == ["cp1"]
    assert reader.select("t", checkpoint_ns="").owner == "alice"
    assert [t for t, _ in reader.user_threads("mallory", []).entries] == []
