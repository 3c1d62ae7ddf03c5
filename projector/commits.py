"""Committing consumer offsets once their records are applied.

An applied batch's offsets are committed without waiting for the broker's
answer (a synchronous commit cost about as much as decoding and applying
the batch); what was applied is committed synchronously when partitions are
revoked and when the worker stops.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kafka import TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
)
from kafka.structs import OffsetAndMetadata

if TYPE_CHECKING:
    from chatlog.projector.metrics import ProjectorMetrics
    from chatlog.projector.stats import ProjectorStats

log = logging.getLogger("chatlog.projector")


class OffsetCommits:
    """The applied positions of one worker's partitions, and their commits.

    Args:
        transport: ``settings.transport``; decides how a revoke commits.
        stats: Where failed commits are counted.
        metrics: Prometheus metrics, if any.
    """

    def __init__(
        self, transport: str, stats: ProjectorStats, metrics: ProjectorMetrics | None
    ) -> None:
        self.transport = transport
        self.stats = stats
        self.metrics = metrics
        #: A KafkaConsumer, or a ConfluentConsumer with the same methods (set when open).
        self.consumer: Any = None
        # Next offset per partition whose records are applied (and dead-lettered);
        # committed asynchronously after each batch, synchronously at a revoke or stop.
        self._applied: dict[TopicPartition, int] = {}

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets of an applied batch without waiting for the broker."""
        consumer = self.consumer
        assert consumer is not None
        self._applied.update(offsets)
        try:
            consumer.commit_async(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                callback=self._committed,
            )
        except KafkaError as exc:
            self._failed(exc)

    def _committed(self, _offsets: Any, response: Any) -> None:
        # Called by the consumer once the broker answered an asynchronous commit.
        if isinstance(response, Exception):
            self._failed(response)

    def commit_applied(self, partitions: set[TopicPartition] | None = None) -> None:
        """Synchronously commit what was applied (on ``partitions``, default all) and forget it."""
        consumer = self.consumer
        chosen = [tp for tp in self._applied if partitions is None or tp in partitions]
        offsets = {tp: self._applied.pop(tp) for tp in chosen}
        if consumer is None or not offsets:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as exc:
            self._failed(exc)

    def revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit the revoked partitions' applied offsets before another worker takes them."""
        if self.transport == "confluent":
            self.commit_applied(revoked)
            return
        # kafka-python runs the listener on its IO thread, where a blocking commit
        # is refused; the batches' asynchronous commits were queued on the
        # coordinator connection before the poll that began this rebalance.
        for tp in revoked:
            self._applied.pop(tp, None)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, (CommitFailedError, RebalanceInProgressError, IllegalStateError)):
            # The group is rebalancing; whoever owns the partition next gets
            # these records again and the idempotent apply skips them.
            self.stats.commits_failed += 1
            log.info("commit skipped during a rebalance: %s", exc)
            return
        self.stats.commits_failed += 1
        if self.metrics is not None:
            self.metrics.error("kafka", "commit")
        log.warning("commit failed, the batch will be redelivered: %s", exc)
