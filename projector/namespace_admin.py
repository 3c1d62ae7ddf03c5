"""Namespace administration: which namespace is active, what namespaces exist, drop one exactly.

Namespaces share one Redis database with each other and possibly with other
applications, and one namespace's name may be a prefix of another's
(``chatlog`` and ``chatlog:v2``). Every key is therefore parsed back into
its namespace (:func:`chatlog.keys.namespace_of`) before it is counted or
deleted: a SCAN pattern only narrows the search, it never decides.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from chatlog.errors import NamespaceInUseError, ReadModelError
from chatlog.keys import (
    POINTER_PREFIX,
    ReadModelKeys,
    glob_escape,
    namespace_of,
    validate_namespace,
)
from chatlog.namespaces import ActiveNamespace
from chatlog.projector.replay_target import ReplayTarget
from chatlog.settings import Settings

_SCAN_COUNT = 1000
_UNLINK_BATCH = 1000


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """One namespace found in Redis.

    Attributes:
        namespace: Its name.
        keys: How many keys it holds.
        sessions: How many sessions (meta hashes, tombstones included) it holds.
        active: Whether readers and the projector of the topic use it now.
        rebuild: Its rebuild marker (``state`` ``building`` or ``complete``,
            ``as_of_ms``, ``started_at``, ...), empty when no rebuild made it.
    """

    namespace: str
    keys: int
    sessions: int
    active: bool
    rebuild: dict[str, str] = field(default_factory=dict)

    @property
    def rebuilding(self) -> bool:
        """Whether a rebuild into it started and has not finished (running, or interrupted)."""
        return self.rebuild.get("state") == "building"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "namespace": self.namespace,
            "keys": self.keys,
            "sessions": self.sessions,
            "active": self.active,
            "rebuilding": self.rebuilding,
            "rebuild": dict(self.rebuild),
        }


@dataclass(frozen=True, slots=True)
class NamespaceListing:
    """The namespaces of one topic's read model, as :func:`list_namespaces` found them."""

    topic: str
    active: str
    namespaces: list[NamespaceInfo]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "topic": self.topic,
            "active_namespace": self.active,
            "namespaces": [n.as_dict() for n in self.namespaces],
        }


class NamespaceAdmin:
    """Reads the active-namespace pointer, lists and drops namespaces of one replay target.

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
        """Delete every key of ``namespace`` and no other key; return how many were deleted.

        Raises:
            ConfigurationError: ``namespace`` is no valid namespace name.
            NamespaceInUseError: ``namespace`` is the active one of this topic, or
                of any topic whose pointer lives in this Redis (unless ``allow_active``).
            ReadModelError: Redis failed (dropping again finishes the job).
        """
        validate_namespace(namespace)
        if not allow_active:
            self._refuse_active(namespace)
        return self.delete_keys(namespace)

    def _refuse_active(self, namespace: str) -> None:
        users = []
        if self.target.is_home() and namespace == self.active_namespace():
            users.append(self.settings.topic)
        pointers = self.target.call(lambda: self._pointers(self.target.redis))
        users += [topic for topic, active in pointers.items() if active == namespace]
        if users:
            topics = ", ".join(sorted(set(users)))
            raise NamespaceInUseError(
                f"namespace {namespace!r} is the active one (of topic {topics}); rebuild another "
                "namespace and switch readers to it first, then drop this one"
            )

    @staticmethod
    def _pointers(client: redis.Redis) -> dict[str, str]:
        """Every active-namespace pointer in ``client``: topic -> namespace."""
        prefix = POINTER_PREFIX + ":"
        found = {}
        for key in client.scan_iter(match=glob_escape(prefix) + "*", count=_SCAN_COUNT):
            value = client.get(key)
            if value is not None:
                text = value.decode() if isinstance(value, bytes) else str(value)
                found[key.decode()[len(prefix) :]] = text
        return found

    def delete_keys(self, namespace: str) -> int:
        """Delete the keys that parse back to exactly ``namespace``; return how many.

        Not validated, not guarded: :meth:`drop` is the public way in. A
        one-session rebuild uses it for its scratch namespace.
        """
        client = self.target.redis
        keys = ReadModelKeys(namespace)
        deleted = 0
        batch: list[bytes] = []
        try:
            for key in client.scan_iter(match=keys.all_pattern(), count=_SCAN_COUNT):
                if not keys.owns(key):
                    continue  # a namespace below this one, or another application's key
                batch.append(key)
                if len(batch) >= _UNLINK_BATCH:
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
        keys = ReadModelKeys(namespace)
        return bool(
            self.target.call(
                lambda: any(
                    keys.owns(k)
                    for k in client.scan_iter(match=keys.all_pattern(), count=_SCAN_COUNT)
                )
            )
        )

    def namespaces(self) -> NamespaceListing:
        """Every namespace in this Redis that belongs to the topic, with counts and rebuilds.

        Keys do not name their topic; a namespace counts as another topic's
        when its rebuild marker says so (rebuilds record their topic), and the
        active namespace is always listed, even when it holds no key yet.
        """
        client = self.target.redis
        active = self.active_namespace() if self.target.is_home() else ""

        def scan() -> tuple[Counter[str], Counter[str]]:
            keys: Counter[str] = Counter()
            sessions: Counter[str] = Counter()
            for raw in client.scan_iter(match="*:*", count=_SCAN_COUNT):
                text = raw.decode("utf-8", "surrogateescape")
                namespace = namespace_of(text)
                if namespace is not None:
                    keys[namespace] += 1
                    if text.endswith("}:meta") and ReadModelKeys(namespace).meta(
                        ReadModelKeys.session_of(text)
                    ) == text:
                        sessions[namespace] += 1
            return keys, sessions

        counts, sessions = self.target.call(scan)
        names = sorted(set(counts) | ({active} if active else set()))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(ReadModelKeys(name).rebuild())
        markers = self.target.call(pipe.execute)
        found = []
        for name, marker in zip(names, markers, strict=True):
            rebuild = {k.decode(): v.decode() for k, v in marker.items()}
            if rebuild.get("topic", self.settings.topic) != self.settings.topic:
                continue
            found.append(
                NamespaceInfo(name, counts[name], sessions[name], name == active, rebuild)
            )
        return NamespaceListing(self.settings.topic, active, found)


def list_namespaces(
    settings: Settings, *, redis_client: redis.Redis | None = None
) -> NamespaceListing:
    """The namespaces of ``settings.topic``'s read model: key counts, the active one, rebuilds.

    The Python side of ``chatlog replay namespaces``.

    Args:
        settings: Connections and topic.
        redis_client: Redis to look in (default: ``settings.redis_url``).

    Raises:
        ReadModelError: Redis cannot be read.
    """
    target = ReplayTarget(settings, redis_client)
    try:
        return NamespaceAdmin(target).namespaces()
    finally:
        if redis_client is None:
            target.redis.close()
