"""What the projector does when the consumer group moves partitions.

The worker applies each polled batch and sends its commit (without waiting
for the answer) before it polls again; at a revoke, ``before_revoke`` gets
the chance to commit the revoked partitions' applied offsets synchronously
before another worker takes them. The listener records the change (logs,
rebalance counter, per-partition gauges) so operators can see it.
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

    def __init__(
        self,
        on_change: RebalanceCallback | None = None,
        *,
        before_revoke: Callable[[set[TopicPartition]], None] | None = None,
    ) -> None:
        self.on_change = on_change
        self.before_revoke = before_revoke
        self.rebalances = 0

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what was applied on the partitions this worker gives up, and record it."""
        if self.before_revoke is not None:
            self.before_revoke(set(revoked))
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
