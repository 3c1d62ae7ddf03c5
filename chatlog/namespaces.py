"""The active namespace: which read-model namespace readers and the projector use.

A rebuild fills a new namespace while readers keep reading the old one;
switching is one ``SET`` of a pointer key (:func:`chatlog.keys.active_namespace_key`),
so every reader moves at once. Readers cache the pointer for
:data:`POINTER_TTL_S`, so a switch reaches every reader within that time
(plus the duration of a read already in flight) at the cost of one ``GET``
per reader and interval.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from chatlog.errors import ReadModelError
from chatlog.keys import active_namespace_key, validate_namespace
from chatlog.settings import Settings

#: How long a resolved pointer is trusted before it is read again.
POINTER_TTL_S = 0.5


class ActiveNamespace:
    """Resolves (and caches for :data:`POINTER_TTL_S`) the active namespace of one topic.

    Args:
        topic: The event topic whose read model is meant.
        default: The namespace in use while no switch has happened
            (``Settings.namespace``).
        ttl_s: How long a resolved value is reused.

    """

    def __init__(self, topic: str, default: str, *, ttl_s: float = POINTER_TTL_S) -> None:
        self.key = active_namespace_key(topic)
        self.default = default
        self.ttl_s = ttl_s
        self._value = default
        self._expires = 0.0
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> ActiveNamespace:
        """Return the active namespace of ``settings.topic`` (default ``settings.namespace``)."""
        return cls(settings.topic, settings.namespace)

    def get(self, client: redis.Redis) -> str:
        """Return the active namespace, read through ``client`` when the cached value expired.

        Raises:
            ReadModelError: Redis cannot be read.
            ConfigurationError: the pointer holds no valid namespace name.

        """
        now = time.monotonic()
        if now < self._expires:
            return self._value
        try:
            raw = client.get(self.key)
        except redis.RedisError as exc:
            raise ReadModelError(f"reading {self.key} failed: {exc}") from exc
        return self._store(raw, now)

    async def aget(self, client: aioredis.Redis) -> str:
        """Async :meth:`get`."""
        now = time.monotonic()
        if now < self._expires:
            return self._value
        try:
            raw = await client.get(self.key)
        except redis.RedisError as exc:
            raise ReadModelError(f"reading {self.key} failed: {exc}") from exc
        return self._store(raw, now)

    def refresh(self) -> None:
        """Forget the cached value, so the next :meth:`get` reads the pointer."""
        with self._lock:
            self._expires = 0.0

    def _store(self, raw: Any, now: float) -> str:
        value = raw.decode() if isinstance(raw, bytes) else (raw or self.default)
        # The pointer is written by chatlog only, but it is plain Redis data: a
        # value that is no namespace would turn every key and SCAN pattern wrong.
        validate_namespace(
            value,
            setting=f"the active-namespace pointer {self.key} (switch readers to a rebuilt "
            "namespace, or DEL the pointer to use CHATLOG_NAMESPACE)",
        )
        with self._lock:
            self._value, self._expires = value, now + self.ttl_s
        return value

    def switch(self, client: redis.Redis, namespace: str) -> str | None:
        """Point readers at ``namespace``; return the namespace that was active before.

        Raises:
            ConfigurationError: ``namespace`` is no valid namespace name.
            ReadModelError: Redis cannot be written.

        """
        validate_namespace(namespace)
        try:
            previous = client.set(self.key, namespace, get=True)
        except redis.RedisError as exc:
            raise ReadModelError(f"switching the active namespace failed: {exc}") from exc
        self.refresh()
        if isinstance(previous, bytes):
            return previous.decode()
        return self.default
