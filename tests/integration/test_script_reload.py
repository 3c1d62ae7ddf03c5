"""Both projections survive a Redis that lost its script cache (restart, SCRIPT FLUSH)."""

from __future__ import annotations

import redis

from chatlog.projector import LogRecord, RedisProjection
from chatlog.projector.checkpoint_projection import CheckpointProjection, CheckpointRecord
from chatlog.schemas.checkpoint_events import CheckpointEvent, WritesPut
from chatlog.schemas.events import ChatEvent, MessageAppended
from tests.helpers import delete_namespace, unique


def test_projections_reload_their_script_after_script_flush(redis_client: redis.Redis) -> None:
    """A NOSCRIPT answer loads the script and re-sends the batch, applying each event once."""
    namespace = unique("test:scripts")
    chat = RedisProjection(redis_client, namespace)
    checkpoints = CheckpointProjection(redis_client, namespace)
    try:
        redis_client.script_flush()
        first = chat.apply([LogRecord(0, 0, ChatEvent("s", MessageAppended("human", "a")))])
        assert (first.applied, first.failed) == (1, [])
        redis_client.script_flush()
        writes = CheckpointEvent("t", WritesPut("", "cp-1", "task", writes=()))
        applied = checkpoints.apply([CheckpointRecord(0, 0, writes)])
        assert (applied.applied, applied.failed) == (1, [])
        redis_client.script_flush()
        again = chat.apply([LogRecord(0, 0, ChatEvent("s", MessageAppended("human", "a")))])
        assert (again.applied, again.skipped) == (0, 1)
        assert redis_client.llen(chat.keys.messages("s")) == 1
    finally:
        delete_namespace(redis_client, namespace)
