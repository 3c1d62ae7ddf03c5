"""Refusing a Redis that may evict the read model's keys.

The read model has no expiry of its own unless sessions have a TTL, so a
``maxmemory-policy`` that evicts keys under memory pressure deletes sessions,
or parts of them, behind the projector's back. The projector and
``ChatLog`` read the policy once at start and refuse one that can evict
chatlog's keys, unless ``CHATLOG_ALLOW_EVICTION=true`` says the operator
relies on loss detection and repair instead.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from chatlog.errors import ConfigurationError
from chatlog.settings import Settings

log = logging.getLogger("chatlog")

#: Servers whose policy could not be read, already warned about (one WARNING each).
_WARNED: set[str] = set()

#: Policies that never evict a key.
SAFE_POLICIES = frozenset({"noeviction"})


def evicting_policy(policy: str, *, sessions_expire: bool) -> bool:
    """Whether ``policy`` can evict chatlog's keys.

    ``allkeys-*`` evicts any key; ``volatile-*`` only keys with an expiry,
    which chatlog's keys carry only when sessions have a TTL.
    """
    if policy in SAFE_POLICIES:
        return False
    if policy.startswith("volatile-"):
        return sessions_expire
    return True


def check_eviction_policy(client: redis.Redis, settings: Settings) -> str | None:
    """Read ``maxmemory-policy`` and refuse one that can evict the read model's keys.

    Returns the policy, or ``None`` when the server does not let this client
    read it (a managed Redis that disables ``CONFIG``): that is logged once at
    WARNING and the caller goes on.

    Raises:
        ConfigurationError: the policy can evict chatlog's keys and
            ``settings.allow_eviction`` is false.
    """
    try:
        reply: dict[Any, Any] = dict(client.config_get("maxmemory-policy"))
    except redis.ResponseError as exc:
        where = client.connection_pool.connection_kwargs
        server = repr([where.get(k) for k in ("host", "port", "db", "path")])
        if server in _WARNED:
            return None
        _WARNED.add(server)
        log.warning(
            "cannot read Redis maxmemory-policy (%s): make sure it is noeviction, or that "
            "losing keys to eviction is acceptable (chatlog detects and repairs lost state)",
            exc,
        )
        return None
    value = reply.get("maxmemory-policy") or reply.get(b"maxmemory-policy")
    if value is None:
        return None
    policy = value.decode() if isinstance(value, bytes) else str(value)
    expiring = settings.session_ttl_s is not None
    if evicting_policy(policy, sessions_expire=expiring) and not settings.allow_eviction:
        scope = "keys with an expiry (sessions have a TTL)" if expiring else "any key"
        raise ConfigurationError(
            f"Redis maxmemory-policy is {policy!r}, which evicts {scope} under memory "
            "pressure and would silently cut chat histories: set maxmemory-policy to "
            "noeviction (CONFIG SET maxmemory-policy noeviction, or in redis.conf), or set "
            "CHATLOG_ALLOW_EVICTION=true to accept it and rely on chatlog's loss detection "
            "and repair"
        )
    return policy


def guard_eviction(client: redis.Redis, settings: Settings) -> None:
    """:func:`check_eviction_policy` at a component's start; an unreachable Redis is not checked.

    A Redis that does not answer yet is the outage path's business (the
    projector retries, readers raise); the check is not repeated then.

    Raises:
        ConfigurationError: as :func:`check_eviction_policy`.
    """
    try:
        check_eviction_policy(client, settings)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("could not check Redis maxmemory-policy, Redis did not answer: %s", exc)
