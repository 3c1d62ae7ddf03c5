"""Reading a session from the Redis read model: one round trip, sync or async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import redis
import redis.asyncio as aioredis

from chatlog.errors import ReadModelError
from chatlog.histories.read_your_writes import repairing_error
from chatlog.keys import (
    META_COUNT,
    META_EXPIRED,
    META_OFFSET,
    META_OWNER,
    META_PARTITION,
    ReadModelKeys,
)
from chatlog.namespaces import ActiveNamespace
from chatlog.redis_clients import AsyncClients, is_cluster
from chatlog.session_integrity import INTEGRITY_FIELDS, has_hole

#: The meta fields one read takes: the tracking position, the owner, then the
#: fields of the integrity check.
_FIELDS = [META_PARTITION, META_OFFSET, META_OWNER, *INTEGRITY_FIELDS]
#: Why a snapshot cannot be served (SessionSnapshot.incomplete).
REPAIRING = "the read model namespace is being repaired"
HOLE = "the session lost part of its keys and waits for its repair"

T = TypeVar("T")
#: How often a read that spans round trips (a listing) looks again while a repair runs.
_REPAIR_POLL_S = 0.05

# Read-time TTL refresh (Settings.session_ttl_refresh_on_read): push a live
# session's expiry to now + its TTL (the session's override, else ARGV[1]).
# A tombstone, an expired session or a session without expiry is left alone.
# The message-id set (KEYS[3]) lives as long as the messages.
#: An async read on a Redis Cluster (same slot keys): redis-py's async cluster
#: MULTI breaks once clients of several event loops exist, so a script reads
#: meta, range and length atomically instead. KEYS: meta, messages;
#: ARGV: start, stop, the meta fields.
_CLUSTER_READ = """
local meta = redis.call('HMGET', KEYS[1], unpack(ARGV, 3))
return {meta, redis.call('LRANGE', KEYS[2], ARGV[1], ARGV[2]), redis.call('LLEN', KEYS[2])}
"""

_REFRESH_TTL = """
local ttl = tonumber(redis.call('HGET', KEYS[2], 'ttl_ms') or ARGV[1])
if ttl and ttl > 0 and redis.call('HEXISTS', KEYS[2], 'deleted') == 0
    and redis.call('HEXISTS', KEYS[2], 'expired') == 0
    and redis.call('PTTL', KEYS[2]) > 0 then
  local now = redis.call('TIME')
  local at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[2], at)
  redis.call('PEXPIREAT', KEYS[3], at)
end
return 0
"""


class SessionSnapshot(NamedTuple):
    """A session as the read model holds it now.

    ``offset`` and ``partition`` are the tracking position of the last
    applied event (``-1`` and ``None`` when the projector has seen nothing).
    ``start`` is the position of ``messages[0]`` in the session's history
    (set by :meth:`ReadModelReader.read_window`; ``0`` otherwise).
    ``incomplete`` says why the messages must not be served (the namespace is
    being repaired, or the session has a hole), ``None`` when they can.
    """

    offset: int
    partition: int | None
    owner: str | None
    messages: list[bytes]
    start: int = 0
    incomplete: str | None = None


def _snapshot(reply: list[Any]) -> SessionSnapshot:
    (partition, offset, owner, *integrity), messages, length, repairing = reply[:4]
    incomplete = None
    if repairing:
        incomplete = REPAIRING
    elif has_hole(integrity, partition is not None, int(length)):
        incomplete = HOLE
    if integrity[2] is not None:
        # Idle-expired: its keys linger briefly for the projector, not for readers.
        owner, messages = None, []
    return SessionSnapshot(
        offset=int(offset) if offset is not None else -1,
        partition=int(partition) if partition is not None else None,
        owner=owner.decode() if owner is not None else None,
        messages=messages,
        incomplete=incomplete,
    )


def _window_snapshot(reply: list[Any], limit: int | None, before: int | None) -> SessionSnapshot:
    snapshot = _snapshot(reply)  # the replies of ReadModelReader._window, in _commands' order
    length = int(reply[2]) if snapshot.messages else 0  # idle-expired: empty to readers
    if before is None:
        start = length - len(snapshot.messages)
    else:
        start = 0 if limit is None else max(before - limit, 0)
    return snapshot._replace(start=start)


class SessionVersion(NamedTuple):
    """A session's tracking position, owner and message count (its version), and one verdict.

    ``verdict`` is the projector's verdict on the conditional append at the
    offset asked for (``chatlog.keys.VERDICT_*``), ``None`` while there is none.
    """

    offset: int
    partition: int | None
    owner: str | None
    version: int
    verdict: str | None


_VERSION_FIELDS = [META_PARTITION, META_OFFSET, META_OWNER, META_COUNT, META_EXPIRED]


def _version(meta: list[Any], verdict: Any) -> SessionVersion:
    partition, offset, owner, count, expired = meta
    if expired is not None:
        owner, count = None, b"0"
    return SessionVersion(
        offset=int(offset) if offset is not None else -1,
        partition=int(partition) if partition is not None else None,
        owner=owner.decode() if owner is not None else None,
        version=int(count or 0),
        verdict=verdict.decode() if verdict is not None else None,
    )


def _range(limit: int | None) -> tuple[int, int]:
    return (0, -1) if limit is None else (-limit, -1)


class ReadModelReader:
    """Reads sessions of one namespace; sync through redis-py, async through redis.asyncio.

    The meta hash, the list and the namespace's repairing flag are read in one
    transaction (one round trip), so the meta's ``count`` and the list's
    length describe the same moment: when they disagree, a key was lost
    (:mod:`chatlog.session_integrity`), the snapshot says so in
    ``incomplete``, and the session is handed to the projector's repair.

    Async reads use one redis.asyncio client per event loop, made from
    ``redis_url`` or else like ``client`` (TLS included); :meth:`close` closes them.

    With ``active``, the namespace is the active one (resolved at most every
    :data:`~chatlog.namespaces.POINTER_TTL_S`), so readers follow a rebuild's switch.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        redis_url: str | None = None,
        active: ActiveNamespace | None = None,
    ) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        self.active = active
        #: When positive, every read also pushes the session's expiry to now + TTL
        #: (milliseconds; the session's own override wins).
        self.refresh_ttl_ms = 0
        self._async_clients = AsyncClients(client, url=redis_url)
        self._cluster = is_cluster(client)

    def read(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """The session's tracking position and its last ``limit`` (or all) messages."""
        start, stop = _range(limit)
        if self.active is not None:
            self._follow(self.active.get(self.client))
        pipe = self.client.pipeline(transaction=True)
        self._commands(pipe, session_id, start, stop)
        try:
            snapshot = _snapshot(self._repairing(pipe.execute()))
            if snapshot.incomplete is HOLE:
                self.client.sadd(self.keys.repair_requests(), session_id)
        except redis.RedisError as exc:
            raise ReadModelError(
                f"reading session {session_id!r} from Redis failed: {exc}"
            ) from exc
        return snapshot

    async def aread(self, session_id: str, *, limit: int | None = None) -> SessionSnapshot:
        """Async :meth:`read`."""
        start, stop = _range(limit)
        client = self._async_clients.get()
        if self.active is not None:
            self._follow(await self.active.aget(client))
        pipe = client.pipeline(transaction=not self._cluster)
        self._acommands(pipe, session_id, start, stop)
        try:
            snapshot = _snapshot(await self._arepairing(client, await pipe.execute()))
            if snapshot.incomplete is HOLE:
                await client.sadd(self.keys.repair_requests(), session_id)
        except redis.RedisError as exc:
            raise ReadModelError(
                f"reading session {session_id!r} from Redis failed: {exc}"
            ) from exc
        return snapshot

    def read_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Up to ``limit`` messages before position ``before`` (default: the end), and ``start``.

        One ``MULTI`` reads the length and the range together, so ``start``
        is exact even while the projector appends.
        """
        if self.active is not None:
            self._follow(self.active.get(self.client))
        pipe = self.client.pipeline(transaction=True)
        self._window(pipe, session_id, limit, before)
        try:
            return _window_snapshot(self._repairing(pipe.execute()), limit, before)
        except redis.RedisError as exc:
            raise ReadModelError(
                f"reading session {session_id!r} from Redis failed: {exc}"
            ) from exc

    async def aread_window(
        self, session_id: str, *, limit: int | None, before: int | None
    ) -> SessionSnapshot:
        """Async :meth:`read_window`."""
        client = self._async_clients.get()
        if self.active is not None:
            self._follow(await self.active.aget(client))
        pipe = client.pipeline(transaction=not self._cluster)
        self._window(pipe, session_id, limit, before, commands=self._acommands)
        try:
            return _window_snapshot(
                await self._arepairing(client, await pipe.execute()), limit, before
            )
        except redis.RedisError as exc:
            raise ReadModelError(
                f"reading session {session_id!r} from Redis failed: {exc}"
            ) from exc

    def _window(
        self,
        pipe: Any,
        session_id: str,
        limit: int | None,
        before: int | None,
        commands: Callable[[Any, str, int, int], None] | None = None,
    ) -> None:
        if before is None:
            start, stop = _range(limit)
        elif before <= 0:
            start, stop = 1, 0  # nothing (LRANGE 0 -1 would be everything)
        else:
            start, stop = (0 if limit is None else max(before - limit, 0)), before - 1
        (commands or self._commands)(pipe, session_id, start, stop)

    def version(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """The session's version (message count), and the verdict at offset ``verdict_of``."""
        if self.active is not None:
            self._follow(self.active.get(self.client))
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.meta(session_id), _VERSION_FIELDS)
        pipe.hget(keys.verdicts(session_id), str(verdict_of))
        try:
            meta, verdict = pipe.execute()
        except redis.RedisError as exc:
            raise ReadModelError(f"reading session {session_id!r} failed: {exc}") from exc
        return _version(meta, verdict)

    async def aversion(self, session_id: str, *, verdict_of: int = -1) -> SessionVersion:
        """Async :meth:`version`."""
        client = self._async_clients.get()
        if self.active is not None:
            self._follow(await self.active.aget(client))
        keys = self.keys
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.meta(session_id), _VERSION_FIELDS)
        pipe.hget(keys.verdicts(session_id), str(verdict_of))
        try:
            meta, verdict = await pipe.execute()
        except redis.RedisError as exc:
            raise ReadModelError(f"reading session {session_id!r} failed: {exc}") from exc
        return _version(meta, verdict)

    def current_keys(self) -> ReadModelKeys:
        """The key builder of the namespace readers use now (following a rebuild's switch)."""
        if self.active is not None:
            self._follow(self.active.get(self.client))
        return self.keys

    async def acurrent_keys(self) -> ReadModelKeys:
        """Async :meth:`current_keys`: the pointer is read through redis.asyncio."""
        if self.active is not None:
            self._follow(await self.active.aget(self._async_clients.get()))
        return self.keys

    def async_client(self) -> aioredis.Redis:
        """The redis.asyncio client of the running event loop (made like :attr:`client`)."""
        return self._async_clients.get()

    def _commands(self, pipe: Any, session_id: str, start: int, stop: int) -> None:
        """One read's commands; :func:`_snapshot` unpacks their replies in this order."""
        keys = self.keys
        pipe.hmget(keys.meta(session_id), _FIELDS)
        pipe.lrange(keys.messages(session_id), start, stop)
        pipe.llen(keys.messages(session_id))
        if not self._cluster:
            # On a Redis Cluster the repairing key is in another slot: the
            # MULTI cannot hold it, and it is read right after (_repairing).
            pipe.exists(keys.repairing())
        self._refresh(pipe, session_id)

    def _acommands(self, pipe: Any, session_id: str, start: int, stop: int) -> None:
        """An async read's commands: :meth:`_commands`, or on a cluster one script read."""
        if not self._cluster:
            self._commands(pipe, session_id, start, stop)
            return
        keys = self.keys
        pipe.eval(
            _CLUSTER_READ, 2, keys.meta(session_id), keys.messages(session_id),
            start, stop, *_FIELDS,
        )
        self._refresh(pipe, session_id)

    def _repairing(self, reply: list[Any]) -> list[Any]:
        """``reply`` with the repairing flag in its place (read separately on a cluster)."""
        if self._cluster:
            reply = list(reply)
            reply.insert(3, self.client.exists(self.keys.repairing()))
        return reply

    async def _arepairing(self, client: aioredis.Redis, reply: list[Any]) -> list[Any]:
        """Async :meth:`_repairing`."""
        if self._cluster:
            reply = [*reply[0], *reply[1:]]  # _acommands' script read, unpacked
            reply.insert(3, await client.exists(self.keys.repairing()))
        return reply

    def _refresh(self, pipe: Any, session_id: str) -> None:
        if self.refresh_ttl_ms > 0:
            keys = self.keys
            pipe.eval(
                _REFRESH_TTL,
                3,
                keys.messages(session_id),
                keys.meta(session_id),
                keys.message_ids(session_id),
                self.refresh_ttl_ms,
            )

    def outside_repair(self, read: Callable[[], T], subject: str, timeout_s: float) -> T:
        """``read()``'s answer, taken while no repair of the namespace ran.

        For reads of several round trips (listings), which the one-transaction
        check of :meth:`read` cannot cover: the namespace's repairing flag and
        generation are read before and after; while a repair runs, or when one
        ran in between (the generation changed), the read waits and is taken
        again, up to ``timeout_s``.

        Raises:
            ReadModelRepairingError: the namespace was still being repaired after ``timeout_s``.
            ReadModelError: Redis could not be read.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            before = self._repair_state()
            if before is not None:
                answer = read()
                if self._repair_state() == before:
                    return answer
            if time.monotonic() >= deadline:
                raise repairing_error(subject, REPAIRING, timeout_s)
            time.sleep(_REPAIR_POLL_S)

    async def aoutside_repair(
        self, read: Callable[[], Awaitable[T]], subject: str, timeout_s: float
    ) -> T:
        """Async :meth:`outside_repair`."""
        deadline = time.monotonic() + timeout_s
        while True:
            before = await self._arepair_state()
            if before is not None:
                answer = await read()
                if await self._arepair_state() == before:
                    return answer
            if time.monotonic() >= deadline:
                raise repairing_error(subject, REPAIRING, timeout_s)
            await asyncio.sleep(_REPAIR_POLL_S)

    def _repair_state(self) -> bytes | str | None:
        """The namespace's generation (``""`` without one), ``None`` while it is repaired."""
        keys = self.current_keys()
        try:
            repairing = self.client.exists(keys.repairing())
            generation = self.client.get(keys.generation())
        except redis.RedisError as exc:
            raise ReadModelError(f"reading namespace {keys.namespace!r} failed: {exc}") from exc
        return None if repairing else (generation or "")

    async def _arepair_state(self) -> bytes | str | None:
        keys = await self.acurrent_keys()
        client = self._async_clients.get()
        try:
            repairing = await client.exists(keys.repairing())
            generation = await client.get(keys.generation())
        except redis.RedisError as exc:
            raise ReadModelError(f"reading namespace {keys.namespace!r} failed: {exc}") from exc
        return None if repairing else (generation or "")

    def _follow(self, namespace: str) -> None:
        if namespace != self.keys.namespace:
            self.keys = ReadModelKeys(namespace)

    def close(self) -> None:
        """Close the async clients this reader opened (the sync client is the caller's)."""
        self._async_clients.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: closes the running loop's client before returning."""
        await self._async_clients.aclose()

