"""Following the active namespace, and never leaving a gap in the one applied to.

Each live batch goes to the namespace the active pointer names (a rebuild's
switch moves it); a partition whose batch starts beyond what that namespace
has applied is sought back to the namespace's recorded position first.
"""

from __future__ import annotations

from typing import Any

import redis

from chatlog.namespaces import ActiveNamespace
from chatlog.projector.positions import BatchTarget, ProjectionTarget
from chatlog.projector.redis_projection import RedisProjection
from chatlog.settings import Settings


class NamespaceFollower:
    """The namespace (and its :class:`RedisProjection`) a worker's batches are applied to.

    Args:
        client: Redis of the read model.
        settings: The worker's settings (topic, session TTL).
        namespace: The namespace to start with.
        pinned: Whether ``namespace`` is pinned (not following the active pointer).
    """

    def __init__(
        self, client: redis.Redis, settings: Settings, namespace: str, *, pinned: bool
    ) -> None:
        self.client = client
        self.settings = settings
        self.projection = self._projection(namespace)
        self.target = ProjectionTarget(
            client, namespace, active=None if pinned else ActiveNamespace.of(settings)
        )
        # Next offset per partition this worker sent to the current namespace:
        # a batch starting at or below it cannot leave a gap there.
        self.known: dict[int, int] = {}

    def _projection(self, namespace: str) -> RedisProjection:
        # Live batches check the namespace for lost state (ReadModelRepair).
        return RedisProjection(
            self.client, namespace, session_ttl_s=self.settings.session_ttl_s, detect_loss=True
        )

    @property
    def namespace(self) -> str:
        """The namespace batches are applied to now."""
        return self.projection.keys.namespace

    def sent(self, next_offsets: dict[int, int]) -> None:
        """Record that everything below these offsets was sent to the current namespace."""
        self.known.update(next_offsets)

    def plan(self, consumer: Any, first: dict[int, int]) -> BatchTarget:
        """Follow a namespace switch, and seek back partitions the namespace has gaps in.

        ``first`` is the batch's first offset per partition. Only partitions
        this worker has not applied up to there itself are checked in Redis.
        """
        if self.target.follow():
            self.known.clear()
            # Just switched: every assigned partition, idle ones too, may be
            # ahead of the new namespace; a reader waiting for its own write
            # there would otherwise wait for the next append to that partition.
            first = dict(first)
            for tp in consumer.assignment():
                if tp.topic == self.settings.topic:
                    first.setdefault(tp.partition, consumer.position(tp))
        known = self.known
        plan = self.target.plan(
            {p: offset for p, offset in first.items() if offset > known.get(p, -1)}
        )
        if plan.namespace != self.namespace:
            self.projection = self._projection(plan.namespace)
        for tp in consumer.assignment():
            if tp.topic == self.settings.topic and tp.partition in plan.rewind:
                consumer.seek(tp, plan.rewind[tp.partition])
        return plan
