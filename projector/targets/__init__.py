"""Read-model targets: Redis, SQL (SQLite, PostgreSQL) and DynamoDB, named by URL.

:func:`open_target` picks the implementation from the URL's scheme; the SQL
and DynamoDB modules import their drivers only when asked for, so the default
install (Kafka + Redis) needs neither ``chatlog[postgres]`` nor
``chatlog[dynamodb]``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from chatlog.errors import TargetError
from chatlog.projector.targets.protocol import ReadModelTarget
from chatlog.settings import Settings

__all__ = ["ReadModelTarget", "open_target", "target_kind"]

_KINDS = {
    "redis": "redis",
    "rediss": "redis",
    "sqlite": "sql",
    "postgresql": "sql",
    "postgres": "sql",
    "dynamodb": "dynamodb",
}


def target_kind(url: str) -> str:
    """``redis``, ``sql`` or ``dynamodb`` for a target URL.

    Raises:
        TargetError: the URL names no store chatlog projects into.
    """
    scheme = urlsplit(url).scheme
    kind = _KINDS.get(scheme.split("+", 1)[0])
    if kind is None:
        raise TargetError(
            f"unknown read-model target {scheme + '://' if scheme else url!r}: use redis://, "
            "rediss://, sqlite:///PATH, postgresql://... (any SQLAlchemy driver, e.g. "
            "postgresql+psycopg://) or dynamodb://TABLE"
        )
    return kind


def open_target(url: str, settings: Settings) -> ReadModelTarget:
    """The target ``url`` names, with the deployment's idle TTL and namespace.

    Raises:
        TargetError: unknown scheme, missing extra, or the store cannot be opened.
    """
    kind = target_kind(url)
    ttl = settings.session_ttl_s
    if kind == "redis":
        from chatlog.projector.targets.redis_target import RedisTarget

        return RedisTarget(
            url, namespace=settings.namespace, session_ttl_s=ttl, mode=settings.redis_mode
        )
    if kind == "sql":
        from chatlog.projector.targets.sql import SqlTarget

        return SqlTarget(url, session_ttl_s=ttl)
    from chatlog.projector.targets.dynamodb import DynamoDbTarget

    return DynamoDbTarget(url, session_ttl_s=ttl)
