"""Replay of the checkpoint log: rebuild the LangGraph checkpoints of a read model.

Like :class:`~chatlog.projector.replay.Replayer` for the chat topic, it reads
``<topic>.checkpoints`` with manual assignment (no consumer group, so the live
projector is never disturbed) up to the end offsets captured when it starts,
and applies records with the same :meth:`CheckpointProjection.apply` the live
projector uses. Replaying never resurrects a deleted thread: its
``ThreadDeleted`` event is replayed too.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from chatlog.errors import ChatLogError, TopicError
from chatlog.producers.admin import end_offsets
from chatlog.projector.checkpoint_projection import (
    CheckpointProjection,
    CheckpointRecord,
    decode_record,
)
from chatlog.projector.replay import ReplayProgress
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.settings import Settings


def replay_checkpoints(
    settings: Settings,
    *,
    namespace: str | None = None,
    redis_client: redis.Redis | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
) -> ReplayProgress:
    """Project the whole checkpoint log (up to the end offsets captured now) into ``namespace``.

    Args:
        settings: Connections and topic (the checkpoint topic is ``settings.checkpoint_topic``).
        namespace: Read-model namespace to write (default: ``settings.namespace``).
        redis_client: Redis to write into (default: from ``settings.redis_url``).
        on_progress: Called after each applied batch.

    Raises:
        TopicError: the checkpoint topic is missing or cannot be read. A topic
            nobody has written checkpoints to yet is not an error: nothing is replayed.
    """
    topic = settings.checkpoint_topic
    client = redis_client or redis.Redis.from_url(settings.redis_url)
    projection = CheckpointProjection(client, namespace or settings.namespace)
    codec = CheckpointCodec()
    ends = end_offsets(settings, topic)
    consumer = KafkaConsumer(
        **settings.kafka_client_options(),
        enable_auto_commit=False,
        max_poll_records=settings.max_poll_records,
    )
    try:
        tps = [TopicPartition(topic, p) for p in ends if ends[p] > 0]
        starts = consumer.beginning_offsets(tps) if tps else {}
        progress = ReplayProgress(
            total=sum(ends[tp.partition] - starts[tp] for tp in tps),
            partitions_total=len(ends),
            partitions_done=len(ends) - len(tps),
        )
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        pending = {tp for tp in tps if starts[tp] < ends[tp.partition]}
        progress.partitions_done += len(tps) - len(pending)
        while pending:
            batch = consumer.poll(timeout_ms=500)
            records: list[CheckpointRecord] = []
            for tp, raws in batch.items():
                end = ends[tp.partition]
                for raw in raws:
                    if raw.offset >= end:
                        break
                    progress.done += 1
                    try:
                        records.append(decode_record(codec, raw))
                    except ChatLogError:
                        progress.undecodable += 1
                if tp in pending and consumer.position(tp) >= end:
                    pending.discard(tp)
                    consumer.pause(tp)
                    progress.partitions_done += 1
            result = projection.apply(records)
            progress.applied += result.applied
            progress.skipped += result.skipped
            if on_progress is not None:
                on_progress(progress)
        return progress
    except KafkaError as exc:
        raise TopicError(f"replaying {topic!r} failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)
        if redis_client is None:
            client.close()
