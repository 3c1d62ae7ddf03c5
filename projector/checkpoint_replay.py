"""Replay of the checkpoint log: rebuild the LangGraph checkpoints of a read model.

Like :class:`~chatlog.projector.replay.Replayer` for the chat topic, it reads
``<topic>.checkpoints`` with manual assignment (no consumer group, so the live
projector is never disturbed) up to the end offsets captured when it starts,
and applies records with the same :meth:`CheckpointProjection.apply` the live
projector uses. Replaying never resurrects a deleted thread: its
``ThreadDeleted`` event is replayed too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from chatlog.keys import validate_namespace
from chatlog.producers.admin import end_offsets
from chatlog.producers.log_reader import beginning_offsets, read_range
from chatlog.projector.checkpoint_projection import CheckpointProjection, replay_decoder
from chatlog.projector.replay_progress import ReplayProgress
from chatlog.redis_clients import open_redis
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
        ConfigurationError: ``namespace`` is no valid namespace name.
        TopicError: the checkpoint topic is missing or cannot be read. A topic
            nobody has written checkpoints to yet is not an error: nothing is replayed.
    """
    topic = settings.checkpoint_topic
    client = redis_client or open_redis(settings.redis_url, mode=settings.redis_mode)
    projection = CheckpointProjection(client, validate_namespace(namespace or settings.namespace))
    decode = replay_decoder(CheckpointCodec())

    progress = ReplayProgress(namespace=projection.keys.namespace)
    try:
        ends = end_offsets(settings, topic, missing_ok=True)
        starts = beginning_offsets(settings, topic, list(ends))
        for records, _ in read_range(settings, topic, starts, ends, progress, decode):
            result = projection.apply(records)
            progress.applied += result.applied
            progress.skipped += result.skipped
            progress.failed += len(result.failed)
            if on_progress is not None:
                on_progress(progress)
        progress.finished_at = time.monotonic()
        return progress
    finally:
        if redis_client is None:
            client.close()
