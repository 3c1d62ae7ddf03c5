"""Many Redis commands in one write and one read: redis-py's pipeline without its per-command cost.

The projector sends thousands of commands per batch. redis-py's
``Pipeline`` spends several microseconds on each of them (queueing with
options, re-checking every argument's type before packing, a
response-callback lookup per reply); :func:`execute_raw` packs each command
with hiredis in one C call, writes them all at once and reads the raw
replies. It keeps the pipeline's contract: one round trip, replies in order,
a server error reply in its command's place as an exception object,
connection and timeout errors retried by the client's ``Retry`` policy and
then raised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError

from chatlog.errors import ReadModelError

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None  # type: ignore[assignment]

#: One command: its name and arguments (str, bytes, int or float).
Command = tuple[Any, ...]

#: Commands per write. While Redis runs one chunk the client builds and packs
#: the next and reads the replies of the previous one, so a batch costs about
#: the larger of the two sides instead of their sum.
CHUNK = 256


def execute_raw(
    client: redis.Redis, commands: Iterable[Command], *, chunk: int = CHUNK
) -> list[Any]:
    """Send ``commands`` (built lazily, in chunks) in one pipeline; return their raw replies.

    A reply that is a Redis error is returned as its
    :class:`~redis.exceptions.ResponseError` (``NoScriptError``, ...), not
    raised. Replies are not decoded or converted: bytes, ints and lists as
    RESP gives them.

    Raises:
        redis.ConnectionError: the connection failed (after the client's retries).
        redis.TimeoutError: a reply did not come in time (after the client's retries).
    """
    source = iter(commands)
    # Chunks packed so far, kept so that a retry after a dropped connection
    # resends them (``commands`` may be a generator that cannot be replayed).
    packed: list[tuple[Any, int]] = []
    pool = client.connection_pool
    connection: Any = pool.get_connection()

    def chunks() -> Iterator[tuple[Any, int]]:
        index = 0
        while True:
            if index == len(packed):
                part = list(islice(source, chunk))
                if not part:
                    return
                packed.append((_pack(connection, part), len(part)))
            yield packed[index]
            index += 1

    try:
        do: Callable[[], list[Any]] = lambda: _round_trip(connection, chunks())  # noqa: E731
        replies: list[Any] = connection.retry.call_with_retry(
            do, lambda _error: connection.disconnect()
        )
        return replies
    finally:
        pool.release(connection)


def _pack(connection: Any, commands: list[Command]) -> Any:
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(command) for command in commands])]
    return connection.pack_commands(commands)  # pragma: no cover


def _round_trip(connection: Any, chunks: Iterator[tuple[Any, int]]) -> list[Any]:
    read = connection.read_response
    replies: list[Any] = []
    append = replies.append
    pending = 0
    for data, count in chunks:
        connection.send_packed_command(data)
        for _ in range(pending):
            try:
                append(read())
            except ResponseError as exc:
                append(exc)
        pending = count
    for _ in range(pending):
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
        for attempt in (1, 2):
            try:
                replies = execute_raw(self.client, commands(self.sha))
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as exc:
                raise ReadModelError(f"{self.what} failed: {exc}") from exc
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                self.sha = self.client.script_load(self.source)
                continue
            return replies
        raise ReadModelError(f"{self.what}: the Redis script cache keeps losing the script")
