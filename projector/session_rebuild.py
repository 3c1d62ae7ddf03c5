"""One-session rebuild: replay one session from its partition alone and swap it in atomically.

The session is rebuilt under a scratch namespace, then its keys replace the
live ones in one script (``session_swap.lua``), unless the live projector
applied a newer event meanwhile, in which case the replay reads on and tries
again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from kafka.partitioner.default import murmur2

from chatlog.errors import ReplayError, TopicError
from chatlog.identifiers import validate_session_id
from chatlog.keys import ReadModelKeys
from chatlog.producers.admin import partition_count
from chatlog.projector.namespace_admin import NamespaceAdmin
from chatlog.projector.protocol import script_source
from chatlog.projector.rebuild import CATCH_UP_ROUNDS
from chatlog.projector.redis_projection import RedisProjection
from chatlog.projector.replay_log import ReplayLog
from chatlog.projector.replay_progress import ProgressCallback, ReplayProgress

# Puts a session rebuilt under a scratch namespace in place (layout: protocol).
_SWAP = script_source("session_swap")


@dataclass(slots=True)
class SessionReplay:
    """What :meth:`Replayer.rebuild_session` did."""

    session_id: str
    namespace: str
    partition: int
    events: int
    messages: int
    progress: ReplayProgress

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "session_id": self.session_id,
            "namespace": self.namespace,
            "partition": self.partition,
            "session_events": self.events,
            "messages": self.messages,
            "partition_events_read": self.progress.done,
            "seconds": round(self.progress.elapsed_s, 3),
        }


def partition_for(session_id: str, partitions: int) -> int:
    """The partition kafka-python's default (murmur2) partitioner gives ``session_id``."""
    # The same arithmetic as kafka.partitioner.default.DefaultPartitioner (and
    # the Java client) for a keyed record: positive murmur2 modulo the count.
    return (int(murmur2(session_id.encode("utf-8"))) & 0x7FFFFFFF) % partitions


def rebuild_session(
    log: ReplayLog,
    admin: NamespaceAdmin,
    session_id: str,
    namespace: str,
    *,
    on_progress: ProgressCallback | None = None,
) -> SessionReplay:
    """Rebuild ``session_id`` of ``namespace``; see :meth:`Replayer.rebuild_session`."""
    validate_session_id(session_id)
    target = admin.target
    settings = target.settings
    count = partition_count(settings, settings.topic)
    if not count:
        raise TopicError(f"topic {settings.topic!r} does not exist")
    partition = partition_for(session_id, count)
    scratch = f"{namespace}:replay-{uuid.uuid4().hex[:12]}"
    projection = RedisProjection(target.redis, scratch, session_ttl_s=settings.session_ttl_s)
    live, built = ReadModelKeys(namespace), ReadModelKeys(scratch)
    swap = target.redis.register_script(_SWAP)
    progress = ReplayProgress(namespace=namespace, partitions_total=1)
    end = log.partition_end(partition)
    start = log.beginnings({partition: end})[partition]
    key = session_id.encode("utf-8")
    keys = [
        built.messages(session_id),
        built.meta(session_id),
        live.messages(session_id),
        live.meta(session_id),
        built.message_ids(session_id),
        live.message_ids(session_id),
    ]
    events = 0
    try:
        for _ in range(CATCH_UP_ROUNDS):
            window = ({partition: start}, {partition: end})
            for records, _next in log.read(*window, progress, key=key):
                events += len(records)
                result = target.apply(projection, records)
                progress.applied += result.applied
                progress.failed += len(result.failed)
                if on_progress is not None:
                    on_progress(progress)
            if target.call(partial(swap, keys=keys, args=[end - 1])):
                break
            start = end
            end = log.partition_end(partition)
        else:
            raise ReplayError(
                f"session {session_id!r} kept changing during {CATCH_UP_ROUNDS} attempts "
                "to rebuild it; try again"
            )
    finally:
        admin.delete_keys(scratch)
    messages = target.call(lambda: target.redis.llen(live.messages(session_id)))
    progress.finished_at = time.monotonic()
    return SessionReplay(session_id, namespace, partition, events, int(messages), progress)
