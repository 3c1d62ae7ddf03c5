"""Where the projection stands: offsets committed to the group vs. offsets applied to Redis."""

from __future__ import annotations

from collections.abc import Iterable

import redis
from kafka import KafkaAdminClient

from chatlog.keys import META_COUNT, META_OFFSET, META_PARTITION, ReadModelKeys
from chatlog.settings import Settings


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The consumer group's committed offset per partition (absent: nothing committed)."""
    admin = KafkaAdminClient(**settings.kafka_client_options())
    try:
        groups = admin.list_group_offsets({settings.consumer_group: None})
    finally:
        admin.close()
    found = groups.get(settings.consumer_group, {})
    return {
        tp.partition: meta.offset
        for tp, meta in found.items()
        if tp.topic == settings.topic and meta.offset >= 0
    }


def applied_ends(client: redis.Redis, namespace: str, sessions: Iterable[str]) -> dict[int, int]:
    """Per partition, the offset after the newest event applied to any of ``sessions``."""
    keys = ReadModelKeys(namespace)
    pipe = client.pipeline(transaction=False)
    for session_id in sessions:
        pipe.hmget(keys.meta(session_id), [META_PARTITION, META_OFFSET])
    ends: dict[int, int] = {}
    for partition, offset in pipe.execute():
        if partition is not None:
            p = int(partition)
            ends[p] = max(ends.get(p, 0), int(offset) + 1)
    return ends


def applied_count(client: redis.Redis, namespace: str, sessions: Iterable[str]) -> int:
    """How many messages the read model holds for ``sessions``."""
    keys = ReadModelKeys(namespace)
    pipe = client.pipeline(transaction=False)
    for session_id in sessions:
        pipe.hget(keys.meta(session_id), META_COUNT)
    return sum(int(count) for count in pipe.execute() if count is not None)


def applied_not_committed(
    settings: Settings, client: redis.Redis, sessions: Iterable[str]
) -> int:
    """Events already in Redis whose offsets the group has not committed (to be redelivered)."""
    committed = committed_offsets(settings)
    applied = applied_ends(client, settings.namespace, sessions)
    return sum(max(0, end - committed.get(p, 0)) for p, end in applied.items())
