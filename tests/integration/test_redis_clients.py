"""Async Redis clients: made like the sync client (TLS included), closed with their owner."""

from __future__ import annotations

import asyncio
import uuid

import redis
import redis.asyncio as aioredis

from chatlog.redis_clients import AsyncClients, async_client_like
from tests.helpers import eventually


def test_async_client_of_a_tls_client_keeps_its_tls_settings() -> None:
    """A rediss:// client's async twin connects over TLS with the same CA, key and auth."""
    sync = redis.Redis.from_url(
        "rediss://alice:secret@redis.example:6380/2"
        "?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/etc/client.pem&ssl_keyfile=/etc/client.key"
    )
    pool = async_client_like(sync).connection_pool
    options = pool.connection_kwargs
    assert pool.connection_class is aioredis.SSLConnection
    assert (options["host"], options["port"], options["db"]) == ("redis.example", 6380, 2)
    assert (options["username"], options["password"]) == ("alice", "secret")
    assert options["ssl_ca_certs"] == "/etc/ca.pem"
    assert options["ssl_certfile"] == "/etc/client.pem"
    assert options["ssl_keyfile"] == "/etc/client.key"


def _connected(client: redis.Redis, name: str) -> int:
    return sum(1 for entry in client.client_list() if entry.get("name") == name)


def test_async_clients_are_closed_on_their_loops(redis_client: redis.Redis, redis_url: str) -> None:
    """Aclose closes the running loop's client; close closes those of idle loops."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    sync = redis.Redis.from_url(redis_url, client_name=name)
    clients = AsyncClients(sync)

    async def use() -> None:
        await clients.get().ping()

    async def use_and_aclose() -> None:
        await use()
        assert _connected(redis_client, name) == 1
        await clients.aclose()
        eventually(lambda: _connected(redis_client, name) == 0)

    asyncio.run(use_and_aclose())

    idle = asyncio.new_event_loop()
    try:
        idle.run_until_complete(use())
        assert _connected(redis_client, name) == 1
        clients.close()
        eventually(lambda: _connected(redis_client, name) == 0)
    finally:
        idle.close()
        sync.close()
