"""Applied positions: how far each partition of the log is applied to one namespace.

Every writer of a namespace (the live projector and a rebuild) records, with
each applied batch (in the batch's last script call, after its sessions), the
next offset of every partition it applied, in the ``<ns>:positions`` hash
(only ever moving forward). Because writers apply each
partition contiguously, everything below a recorded position is applied. Two
rules follow, and they are what make rebuilds and switches lose nothing:

* a writer may apply a partition's records starting at offset ``F`` only if
  ``F`` is at or below the recorded position (otherwise there is a gap, and it
  rewinds to the recorded position first); redelivered overlap is skipped by
  the idempotent apply;
* a rebuild resumes every partition from its recorded position.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

import redis

from chatlog.errors import ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.namespaces import ActiveNamespace
from chatlog.projector.redis_projection import RedisProjection

log = logging.getLogger("chatlog.projector")


class AppliedPositions:
    """The ``<ns>:positions`` hash of one namespace: partition -> next offset applied."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.key = ReadModelKeys(namespace).positions()

    def read(self) -> dict[int, int]:
        """Return every recorded partition's next offset.

        Raises:
            ReadModelError: Redis cannot be read.

        """
        try:
            raw = self.client.hgetall(self.key)
        except redis.RedisError as exc:
            raise ReadModelError(f"reading {self.key} failed: {exc}") from exc
        return {int(p): int(o) for p, o in raw.items()}

    def advance(self, offsets: Mapping[int, int]) -> None:
        """Record that each partition is applied up to (not including) its offset.

        Raises:
            ReadModelError: Redis cannot be written (the caller retries; it is idempotent).

        """
        if not offsets:
            return
        try:
            # A batch of no changes: the apply script's last step is this one
            # (positions only move forward), kept in one place.
            RedisProjection(self.client, self.namespace).apply([], advance=offsets)
        except (redis.RedisError, ReadModelError) as exc:
            raise ReadModelError(f"recording positions in {self.key} failed: {exc}") from exc

    def gaps(self, first_offsets: Mapping[int, int]) -> dict[int, int]:
        """Partitions whose batch would start past the recorded position, and that position.

        A partition with no recorded position has no constraint (a namespace
        that no rebuild prepared, projected from the group's committed offsets).
        """
        if not first_offsets:
            return {}
        partitions = list(first_offsets)
        try:
            raw = self.client.hmget(self.key, [str(p) for p in partitions])
        except redis.RedisError as exc:
            raise ReadModelError(f"reading {self.key} failed: {exc}") from exc
        return {
            p: int(r)
            for p, r in zip(partitions, raw, strict=True)
            if r is not None and first_offsets[p] > int(r)
        }


class BatchTarget(NamedTuple):
    """Where a projector batch goes: the namespace, and partitions to rewind instead."""

    namespace: str
    rewind: dict[int, int]


class ProjectionTarget:
    """Chooses the namespace each live batch is applied to, following namespace switches.

    Args:
        client: Redis of the read model.
        namespace: The namespace to start with.
        active: The pointer to follow; ``None`` pins ``namespace``.

    """

    def __init__(
        self, client: redis.Redis, namespace: str, *, active: ActiveNamespace | None
    ) -> None:
        self.client = client
        self.active = active
        self.positions = AppliedPositions(client, namespace)

    @property
    def namespace(self) -> str:
        """The namespace batches are applied to now."""
        return self.positions.namespace

    def follow(self) -> bool:
        """Resolve the active namespace; return whether it changed (the projector must switch).

        Raises:
            ReadModelError: Redis cannot be read (retry).

        """
        if self.active is None:
            return False
        namespace = self.active.get(self.client)
        if namespace == self.positions.namespace:
            return False
        log.info("switching projection from %s to %s", self.namespace, namespace)
        self.positions = AppliedPositions(self.client, namespace)
        return True

    def plan(self, first_offsets: Mapping[int, int]) -> BatchTarget:
        """Choose the namespace for records starting at ``first_offsets`` per partition.

        A partition that would start past what the namespace holds (after a
        switch, or a rebalance onto a namespace another writer fills) is
        rewound to the namespace's position: the projector re-reads the gap
        instead of leaving it out.

        Raises:
            ReadModelError: Redis cannot be read (retry).

        """
        rewind = self.positions.gaps(first_offsets)
        if rewind:
            log.info("%s lacks earlier records; re-reading from %s", self.namespace, rewind)
        return BatchTarget(self.namespace, rewind)

