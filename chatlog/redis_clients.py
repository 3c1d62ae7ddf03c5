"""The Redis clients chatlog opens: standalone or cluster, sync and one async per event loop.

:func:`open_redis` is the one place a sync client is made from a URL: a
``redis.Redis`` for a standalone server, a ``redis.cluster.RedisCluster`` for
a Redis Cluster (``CHATLOG_REDIS_MODE``, by default asked of the server).

redis.asyncio connections belong to the event loop that opened them, so a
reader that serves both sync and async callers keeps one async client per
running loop (:class:`AsyncClients`). Each is made from the reader's Redis URL
(which carries the ``CHATLOG_REDIS_*`` credentials and TLS files, see
:class:`~chatlog.settings.Settings`) or, for a client the application passed
in, from that client's connection settings, TLS included
(:func:`async_client_like`); and each is closed with its owner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from chatlog.errors import ConfigurationError, ReadModelError

#: The connection options an async client copies from a sync one. A sync
#: client's other options hold sync-only objects (its ``Retry`` policy, connect
#: callback, sentinels) that the async connection must build for itself.
_CARRIED = frozenset({
    "host", "port", "path", "db", "username", "password", "credential_provider",
    "client_name", "protocol", "encoding", "encoding_errors", "decode_responses",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "retry_on_timeout",
    "health_check_interval",
    "ssl_keyfile", "ssl_certfile", "ssl_password", "ssl_cert_reqs", "ssl_ca_certs",
    "ssl_ca_data", "ssl_ca_path", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
})


def open_redis(url: str, *, mode: str = "auto", **options: Any) -> redis.Redis:
    """A sync client for ``url``: ``redis.Redis``, or ``RedisCluster`` on a Redis Cluster.

    ``mode`` is ``Settings.redis_mode``: ``auto`` asks the node ``url`` names
    (``INFO cluster`` says ``cluster_enabled:1`` on a cluster node), so one
    URL setting serves both deployments. A ``RedisCluster`` has the commands
    and pipelines chatlog uses (each routed by its key's slot) but is not a
    ``redis.Redis`` subclass; it is typed as one so call sites stay one shape,
    and :func:`is_cluster` tells them apart where behaviour must differ.

    Raises:
        ConfigurationError: ``mode`` is not ``auto``, ``standalone`` or ``cluster``.
        ReadModelError: ``auto`` could not ask the server.
    """
    if mode == "auto":
        probe = redis.Redis.from_url(url, **options)
        try:
            enabled = probe.info("cluster").get("cluster_enabled")
        except redis.RedisError as exc:
            raise ReadModelError(
                f"could not ask Redis whether it is a cluster ({exc}); is REDIS_URL right? "
                "CHATLOG_REDIS_MODE=standalone or cluster skips the question"
            ) from exc
        finally:
            probe.close()
        mode = "cluster" if str(enabled) == "1" else "standalone"
    if mode == "cluster":
        return cast(redis.Redis, RedisCluster.from_url(url, **options))
    if mode == "standalone":
        return redis.Redis.from_url(url, **options)
    raise ConfigurationError(f"Redis mode {mode!r} is not one of auto, standalone, cluster")


def is_cluster(client: object) -> bool:
    """Whether ``client`` (sync or async) talks to a Redis Cluster."""
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def async_client_like(client: redis.Redis) -> aioredis.Redis:
    """A redis.asyncio client that connects as ``client`` does (address, auth, TLS, timeouts).

    A ``rediss://`` client gives an async TLS connection with the same
    certificates and hostname checking.
    """
    if is_cluster(client):
        cluster: Any = client
        node = cluster.get_default_node()
        options = {
            k: v for k, v in node.redis_connection.connection_pool.connection_kwargs.items()
            if k in _CARRIED and k not in ("host", "port", "db")
        }
        if issubclass(node.redis_connection.connection_pool.connection_class,
                      redis.SSLConnection):
            options["ssl"] = True
        return cast(aioredis.Redis, AsyncRedisCluster(host=node.host, port=node.port, **options))
    pool = client.connection_pool
    if issubclass(pool.connection_class, redis.SSLConnection):
        connection_class: type[aioredis.connection.AbstractConnection] = aioredis.SSLConnection
    elif issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        connection_class = aioredis.UnixDomainSocketConnection
    else:
        connection_class = aioredis.Connection
    options = {k: v for k, v in pool.connection_kwargs.items() if k in _CARRIED}
    return aioredis.Redis.from_pool(
        aioredis.ConnectionPool(connection_class=connection_class, **options)
    )


class AsyncClients:
    """One redis.asyncio client per running event loop, made on first use and closed together.

    Args:
        like: The sync client whose connection settings async clients copy
            (used when ``url`` is ``None``).
        url: Redis URL to build async clients from (credentials and TLS in it).
    """

    def __init__(self, like: redis.Redis, *, url: str | None = None) -> None:
        self._like = like
        self._url = url
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aioredis.Redis
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        # Closes scheduled on loops running in other threads, kept until done.
        self._closing: set[concurrent.futures.Future[None]] = set()

    def get(self) -> aioredis.Redis:
        """The client of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            if self._url is not None and is_cluster(self._like):
                client = cast(aioredis.Redis, AsyncRedisCluster.from_url(self._url))
            elif self._url is not None:
                client = aioredis.Redis.from_url(self._url)
            else:
                client = async_client_like(self._like)
            with self._lock:
                self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the running loop's client now, and :meth:`close` the others."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

    def close(self) -> None:
        """Close every client, each on its own loop.

        A client of a running loop (this thread's or another's) is closed by a
        task on that loop; one of an idle loop is closed by running that loop
        briefly; one of a closed loop lost its connections with the loop.
        """
        with self._lock:
            clients = list(self._clients.items())
            self._clients.clear()
        for loop, client in clients:
            if loop.is_closed():
                continue
            if loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
                continue
            try:
                loop.run_until_complete(client.aclose())
            except RuntimeError:
                # Another loop runs in this thread: the idle loop cannot run
                # here, and its sockets close when that loop is closed.
                continue
