"""The Redis a replay writes to, with Redis failures turned into chatlog errors.

By default it is the Redis readers use (``settings.redis_url``), the "home"
deployment that holds the active-namespace pointer; a rebuild into another
deployment is possible but can never switch readers there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from chatlog.errors import ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.projector.changes import Change
from chatlog.projector.redis_projection import ApplyResult, RedisProjection
from chatlog.settings import Settings


class ReplayTarget:
    """Redis for a replay, and the few calls every replay makes on it.

    Args:
        settings: ``settings.redis_url`` is the home deployment.
        client: Redis to write into (default: the home deployment).
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis.Redis.from_url(settings.redis_url)

    def apply(self, projection: RedisProjection, records: list[Change]) -> ApplyResult:
        """Apply ``records`` with the live projector's apply step.

        Raises:
            ReadModelError: Redis failed; the same replay run again resumes.
        """
        try:
            return projection.apply(records)
        except redis.RedisError as exc:
            raise ReadModelError(
                f"applying to Redis failed: {exc}; run the same replay again to resume"
            ) from exc

    def call(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` against Redis; a Redis failure becomes :class:`ReadModelError`."""
        try:
            return action()
        except redis.RedisError as exc:
            raise ReadModelError(f"Redis failed during a replay: {exc}") from exc

    def mark(self, namespace: str, **fields: str) -> None:
        """Record ``fields`` in the namespace's rebuild marker (``<ns>:rebuild``)."""
        key = ReadModelKeys(namespace).rebuild()
        mapping: dict[str | bytes, str | bytes] = dict(fields.items())
        self.call(lambda: self.redis.hset(key, mapping=mapping))  # type: ignore[arg-type]

    def home_redis(self) -> redis.Redis:
        """The Redis readers use (where the active-namespace pointer lives)."""
        return self.redis if self.is_home() else redis.Redis.from_url(self.settings.redis_url)

    def is_home(self) -> bool:
        """Whether the replay writes to the Redis readers use (``settings.redis_url``)."""
        kwargs = self.redis.connection_pool.connection_kwargs
        home = redis.Redis.from_url(self.settings.redis_url).connection_pool.connection_kwargs
        return all(kwargs.get(k) == home.get(k) for k in ("host", "port", "db", "path"))
