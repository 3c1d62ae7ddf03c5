"""What the projector does when the consumer group moves partitions.

Nothing is left to commit at a revoke: the worker applies and commits each
polled batch before it polls again, and kafka-python calls the listener
from inside ``poll``, so by then every applied batch is committed. The
listener records the change (logs, rebalance counter, per-partition gauges)
so operators can see it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, TopicPartition

log = logging.getLogger("chatlog.projector")

#: Called with ``"assigned"`` or ``"revoked"`` and the partitions.
RebalanceCallback = Callable[[str, set[TopicPartition]], None]


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs partition assignments and revocations and reports them to ``on_change``."""

    def __init__(self, on_change: RebalanceCallback | None = None) -> None:
        self.on_change = on_change
        self.rebalances = 0

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Record the partitions this worker gave up (their offsets are already committed)."""
        self._changed("revoked", revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Record the partitions this worker now owns."""
        self.rebalances += 1
        self._changed("assigned", assigned)

    def _changed(self, kind: str, partitions: set[TopicPartition]) -> None:
        names = sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)
        log.info(
            "partitions %s: %s",
            kind,
            ",".join(names) or "none",
            extra={"partitions": names, "rebalance": kind},
        )
        if self.on_change is not None:
            self.on_change(kind, set(partitions))
