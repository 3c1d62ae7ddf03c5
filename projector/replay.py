"""Replay: rebuild a read model from the log, the source of truth.

The replayer reads partitions with manual assignment (no consumer group, so
it never disturbs the live projector) up to end offsets captured when it
starts, and applies records with the same :meth:`RedisProjection.apply` that
the live projector uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from chatlog.errors import ChatLogError, TopicError
from chatlog.keys import ReadModelKeys
from chatlog.producers.admin import end_offsets
from chatlog.projector.redis_projection import LogRecord, RedisProjection
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings


@dataclass(slots=True)
class ReplayProgress:
    """Where a replay stands: events read of the total captured, per partition too."""

    total: int
    done: int = 0
    applied: int = 0
    skipped: int = 0
    undecodable: int = 0
    partitions_total: int = 0
    partitions_done: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Events per second so far."""
        elapsed = time.monotonic() - self.started_at
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when known."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None


class Replayer:
    """Rebuilds read models from the log.

    Args:
        settings: Connections and topic.
        redis_client: Redis to write the rebuilt read model into
            (default: ``settings.redis_url``).
    """

    def __init__(self, settings: Settings, *, redis_client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url)
        self.codec = EventCodec()

    def drop(self, namespace: str) -> int:
        """Delete every key of ``namespace``; return how many were deleted."""
        deleted = 0
        pattern = ReadModelKeys(namespace).all_pattern()
        batch: list[bytes] = []
        for key in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(self.redis.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self.redis.unlink(*batch))
        return deleted

    def rebuild(
        self,
        namespace: str | None = None,
        *,
        on_progress: Callable[[ReplayProgress], None] | None = None,
    ) -> ReplayProgress:
        """Project the whole log (up to the end offsets captured now) into ``namespace``."""
        namespace = namespace or self.settings.namespace
        ends = end_offsets(self.settings, self.settings.topic)
        if not ends:
            raise TopicError(f"topic {self.settings.topic!r} does not exist")
        projection = RedisProjection(
            self.redis, namespace, session_ttl_s=self.settings.session_ttl_s
        )
        consumer = KafkaConsumer(
            **self.settings.kafka_client_options(),
            enable_auto_commit=False,
            max_poll_records=self.settings.max_poll_records,
        )
        try:
            tps = [TopicPartition(self.settings.topic, p) for p in ends if ends[p] > 0]
            starts = consumer.beginning_offsets(tps) if tps else {}
            progress = ReplayProgress(
                total=sum(ends[tp.partition] - starts[tp] for tp in tps),
                partitions_total=len(ends),
                partitions_done=len(ends) - len(tps),
            )
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, starts[tp])
            pending = set(tps)
            while pending:
                batch = consumer.poll(timeout_ms=500)
                records: list[LogRecord] = []
                for tp, raws in batch.items():
                    end = ends[tp.partition]
                    for raw in raws:
                        if raw.offset >= end:
                            break
                        progress.done += 1
                        try:
                            event = self.codec.decode(raw.value)
                        except ChatLogError:
                            progress.undecodable += 1
                            continue
                        records.append(LogRecord(raw.partition, raw.offset, event))
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
            raise TopicError(f"replaying {self.settings.topic!r} failed: {exc}") from exc
        finally:
            consumer.close(autocommit=False)
