"""Many Redis commands in one write and one read: redis-py's pipeline without its per-command cost.

The projector sends thousands of commands per batch. redis-py's
``Pipeline`` spends several microseconds on each of them (queueing with
options, re-checking every argument's type before packing, a
response-callback lookup per reply); :class:`InFlight` packs each command
with hiredis in one C call, writes them all at once and reads the raw
replies. It keeps the pipeline's contract: one round trip, replies in order,
a server error reply in its command's place as an exception object,
connection and timeout errors retried by the client's ``Retry`` policy and
then raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

from chatlog.errors import ReadModelError
from chatlog.redis_clients import is_cluster

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None  # type: ignore[assignment]

#: One command: its name and arguments (str, bytes, int or float).
Command = tuple[Any, ...]

#: Commands per write. While Redis runs one chunk the client builds and packs
#: the next, so a batch costs about the larger of the two sides instead of
#: their sum.
CHUNK = 256


class InFlight:
    """Commands written to Redis whose replies are read later, with :meth:`replies`.

    The projector writes a batch, then reads and decodes the next one from
    Kafka while Redis runs it, and only then reads the verdicts. The
    commands are packed once (kept for a resend); the connection stays out of
    the pool until :meth:`replies` returns, so other calls on the client use
    other connections meanwhile. A failed write is not raised here: it is
    retried, with the client's ``Retry`` policy, by :meth:`replies`.
    """

    def __init__(
        self, client: redis.Redis, commands: Iterable[Command], *, chunk: int = CHUNK
    ) -> None:
        self._pool = client.connection_pool
        self._connection: Any = self._pool.get_connection()
        self._packed: list[tuple[Any, int]] = []
        self._failed = False
        source = iter(commands)
        try:
            # Packed and written a chunk at a time: Redis runs the first chunk
            # while the client packs the next.
            while part := list(islice(source, chunk)):
                packed = (_pack(self._connection, part), len(part))
                self._packed.append(packed)
                if not self._failed:
                    self._write(packed[0])
        except BaseException:
            self._release()
            raise

    def _write(self, data: Any) -> None:
        try:
            self._connection.send_packed_command(data)
        except (redis.ConnectionError, redis.TimeoutError):
            self._failed = True

    def replies(self) -> list[Any]:
        """Read every command's reply, in order; resend everything after a dropped connection.

        Raises:
            redis.ConnectionError: the connection failed (after the client's retries).
            redis.TimeoutError: a reply did not come in time (after the client's retries).
        """
        connection = self._connection
        if connection is None:
            raise RuntimeError("the replies of this batch were read already")
        total = sum(count for _, count in self._packed)

        def attempt() -> list[Any]:
            if self._failed:
                # Everything again on a fresh connection: the commands are
                # idempotent, and a partial read cannot tell which ran.
                connection.disconnect()
                self._failed = False
                for data, _count in self._packed:
                    connection.send_packed_command(data)
            try:
                return _read(connection, total)
            except BaseException:
                self._failed = True
                raise

        try:
            replies: list[Any] = connection.retry.call_with_retry(
                attempt, lambda _error: connection.disconnect()
            )
            return replies
        finally:
            self._release()

    def _release(self) -> None:
        if self._connection is not None:
            self._pool.release(self._connection)
            self._connection = None


class ClusterInFlight:
    """:class:`InFlight` on a Redis Cluster: the commands go out in a cluster pipeline.

    Each command is routed by its keys' slot (an ``EVALSHA`` by its declared
    keys), one write and one read per node; redis-py follows ``MOVED`` and
    ``ASK``. The commands run when :meth:`replies` is called, so a failed read
    sends them all again, as :class:`InFlight` does.
    """

    def __init__(self, client: redis.Redis, commands: Iterable[Command]) -> None:
        self._client: Any = client  # a RedisCluster (untyped in redis-py)
        self._commands = list(commands)

    def replies(self) -> list[Any]:
        """Run the commands and return their replies in order (errors in their places)."""
        pipe = self._client.pipeline(transaction=False)
        for command in self._commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))


def _pack(connection: Any, commands: list[Command]) -> Any:
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(command) for command in commands])]
    return connection.pack_commands(commands)  # pragma: no cover


def _read(connection: Any, count: int) -> list[Any]:
    read = connection.read_response
    replies: list[Any] = []
    append = replies.append
    for _ in range(count):
        try:
            append(read())
        except ResponseError as exc:
            append(exc)
    return replies


class ScriptBatch:
    """A Lua script called many times in one round trip, reloaded if Redis lost it.

    Both projections send a batch of ``EVALSHA`` calls of their apply script.
    A server that lost its script cache (restart, ``SCRIPT FLUSH``, failover)
    answers ``NOSCRIPT``; the script is then loaded and the whole batch sent
    again, which is safe because applying is idempotent.
    """

    def __init__(self, client: redis.Redis, source: str, what: str) -> None:
        self.client = client
        self.source = source
        self.what = what
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def run(self, commands: Callable[[str], Iterable[Command]]) -> list[Any]:
        """Send ``commands(sha)`` in one round trip; return the raw replies in order.

        Raises:
            redis.ConnectionError: the connection failed (after the client's retries).
            redis.TimeoutError: a reply did not come in time.
            ReadModelError: any other Redis failure, or a script cache that keeps
                losing the script.
        """
        return self.send(commands).replies()

    def send(self, commands: Callable[[str], Iterable[Command]]) -> PendingScripts:
        """Write ``commands(sha)`` now; read the replies with :meth:`PendingScripts.replies`."""
        return PendingScripts(self, commands)


class PendingScripts:
    """A :class:`ScriptBatch` written to Redis, its replies not read yet."""

    def __init__(self, batch: ScriptBatch, commands: Callable[[str], Iterable[Command]]) -> None:
        self.batch = batch
        self.commands = commands
        self._in_flight = self._send()

    def _send(self) -> InFlight | ClusterInFlight:
        client = self.batch.client
        try:
            if is_cluster(client):
                return ClusterInFlight(client, self.commands(self.batch.sha))
            return InFlight(client, self.commands(self.batch.sha))
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except redis.RedisError as exc:
            raise ReadModelError(f"{self.batch.what} failed: {exc}") from exc

    def replies(self) -> list[Any]:
        """The raw replies in order (see :meth:`ScriptBatch.run` for what it raises)."""
        batch = self.batch
        for attempt in (1, 2):
            try:
                replies = self._in_flight.replies()
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as exc:
                raise ReadModelError(f"{batch.what} failed: {exc}") from exc
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                batch.sha = batch.client.script_load(batch.source)
                self._in_flight = self._send()
                continue
            return replies
        raise ReadModelError(f"{batch.what}: the Redis script cache keeps losing the script")
