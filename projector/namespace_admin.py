"""Namespace administration: which namespace is active, does one hold keys, drop one."""

from __future__ import annotations

import redis

from chatlog.errors import NamespaceInUseError, ReadModelError
from chatlog.keys import ReadModelKeys, active_namespace_key
from chatlog.namespaces import ActiveNamespace
from chatlog.projector.replay_target import ReplayTarget


class NamespaceAdmin:
    """Reads the active-namespace pointer and drops namespaces of one replay target.

    Args:
        target: The Redis the namespaces live in.
    """

    def __init__(self, target: ReplayTarget) -> None:
        self.target = target
        self.settings = target.settings
        self.active = ActiveNamespace.of(target.settings)

    def active_namespace(self) -> str:
        """The namespace readers use now."""
        self.active.refresh()
        return self.active.get(self.target.home_redis())

    def drop(self, namespace: str, *, allow_active: bool = False) -> int:
        """Delete every key of ``namespace``; return how many were deleted.

        Raises:
            NamespaceInUseError: ``namespace`` is the active one (unless ``allow_active``).
        """
        client = self.target.redis
        if not allow_active and self.target.is_home() and namespace == self.active_namespace():
            raise NamespaceInUseError(
                f"namespace {namespace!r} is the active one; rebuild another namespace and "
                "switch readers to it first, then drop this one"
            )
        pointer = active_namespace_key(self.settings.topic).encode()
        deleted = 0
        batch: list[bytes] = []
        try:
            pattern = ReadModelKeys(namespace).all_pattern()
            for key in client.scan_iter(match=pattern, count=1000):
                if key == pointer:
                    continue
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.unlink(*batch))
        except redis.RedisError as exc:
            raise ReadModelError(f"dropping namespace {namespace!r} failed: {exc}") from exc
        return deleted

    def has_keys(self, namespace: str) -> bool:
        """Whether ``namespace`` holds any key."""
        client = self.target.redis
        pattern = ReadModelKeys(namespace).all_pattern()
        pointer = active_namespace_key(self.settings.topic).encode()
        return bool(
            self.target.call(
                lambda: any(k != pointer for k in client.scan_iter(match=pattern, count=1000))
            )
        )
