"""One polled batch on its way through the worker: read, sent to Redis, finished."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from chatlog.projector.changes import Change
from chatlog.projector.dead_letter import DeadLetter
from chatlog.projector.redis_projection import ApplyResult, PendingApply, RedisProjection


@dataclass(slots=True, eq=False)
class PolledBatch:
    """The changes and dead letters of one poll, and the namespace they go to."""

    raws: dict[Any, list[Any]]
    changes: list[Change]
    letters: list[DeadLetter]
    next_offsets: dict[TopicPartition, int]
    #: The namespace's projection when the batch was read (a retry goes there too).
    projection: RedisProjection
    pending: PendingApply | None = None
    started: float = 0.0

    def send(self) -> PendingApply:
        """Write the changes, and the partitions' applied positions after them."""
        return self.projection.send(
            self.changes, advance={tp.partition: o for tp, o in self.next_offsets.items()}
        )

    def unapplied(self) -> dict[tuple[str, int], int]:
        """Records polled per (topic, partition) and not applied until the batch finishes."""
        return {(tp.topic, tp.partition): len(raws) for tp, raws in self.raws.items()}

    def result(self) -> ApplyResult:
        """Redis's verdicts; after a failed read the batch is sent again (it is idempotent)."""
        pending = self.pending or self.send()
        self.pending = None
        return pending.result()
