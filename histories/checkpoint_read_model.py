"""Reading LangGraph checkpoints from the Redis read model: one round trip, sync or async.

One Lua script selects the checkpoints (latest, by id, or a ``list`` page),
follows each checkpoint's channel versions to its blobs and collects its
pending writes, and returns them with the thread's tracking position, so a
read is one round trip and the position covers everything it returned (the
projector updates a thread's keys and position in one atomic script).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import redis
from redis.commands.core import AsyncScript

from chatlog.errors import ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.redis_clients import AsyncClients
from chatlog.schemas.checkpoint_events import TypedValue
from chatlog.schemas.checkpoint_stored import (
    SEPARATOR,
    StoredCheckpoint,
    StoredWrite,
    read_blob,
    read_checkpoint,
    read_write,
)

# KEYS: CheckpointKeys.all(), then the namespace's repairing key (while it
# exists the read model is being rebuilt: the reply is {'R'}). ARGV: all
# namespaces ('1'/'0'), checkpoint ns, checkpoint id ('' = any), before id
# ('' = none), limit (-1 = none).
# Returns {partition, offset, {member, checkpoint, versions json, {blob}, {write}}...}.
# Index members are "<ns>\0<id>" with score 0, so one namespace's checkpoints
# are the lex range [ns\0, ns\1) and ZREVRANGEBYLEX walks them newest first
# (checkpoint ids are time-ordered UUIDv6 text).
_SELECT = """
local meta, idx, nss, cps, cpv, blobs, w, wi =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local all_ns, cns, cid, before = ARGV[1] == '1', ARGV[2], ARGV[3], ARGV[4]
local remaining = tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[9]) == 1 then return {'R'} end
local state = redis.call('HMGET', meta, 'partition', 'offset')
local out = {state[1], state[2]}
local namespaces = {cns}
if all_ns then namespaces = redis.call('ZRANGE', nss, 0, -1) end
for _, ns in ipairs(namespaces) do
  if remaining == 0 then break end
  local members = {}
  if cid ~= '' then
    local member = ns .. '\\0' .. cid
    if (before == '' or cid < before) and redis.call('HEXISTS', cps, member) == 1 then
      members = {member}
    end
  else
    local hi = '(' .. ns .. '\\1'
    if before ~= '' then hi = '(' .. ns .. '\\0' .. before end
    if remaining > 0 then
      members = redis.call('ZREVRANGEBYLEX', idx, hi, '[' .. ns .. '\\0', 'LIMIT', 0, remaining)
    else
      members = redis.call('ZREVRANGEBYLEX', idx, hi, '[' .. ns .. '\\0')
    end
  end
  for _, member in ipairs(members) do
    local versions = redis.call('HGET', cpv, member) or '[]'
    local flat = cjson.decode(versions)
    local fields = {}
    for k = 2, #flat, 2 do fields[#fields + 1] = flat[k] end
    local values = {}
    if #fields > 0 then values = redis.call('HMGET', blobs, unpack(fields)) end
    local wfields = redis.call('ZRANGEBYLEX', wi, '[' .. member .. '\\0', '(' .. member .. '\\1')
    local writes = {}
    if #wfields > 0 then writes = redis.call('HMGET', w, unpack(wfields)) end
    out[#out + 1] = {member, redis.call('HGET', cps, member), versions, values, writes}
    if remaining > 0 then remaining = remaining - 1 end
  end
end
return out
"""


class StoredEntry(NamedTuple):
    """One checkpoint as stored: its namespace and id, the checkpoint, its blobs and writes.

    ``values`` maps channel names to serialized values (channels with no
    value are left out); ``writes`` are in storage order, not yet sorted.
    """

    checkpoint_ns: str
    checkpoint_id: str
    stored: StoredCheckpoint
    values: dict[str, TypedValue]
    writes: list[StoredWrite]


class ThreadSelection(NamedTuple):
    """The selected checkpoints of a thread and the thread's tracking position.

    ``offset`` and ``partition`` are ``-1`` and ``None`` when the projector
    has applied nothing of the thread.
    """

    partition: int | None
    offset: int
    entries: list[StoredEntry]
    #: The namespace is being repaired: nothing was selected (wait, or raise).
    repairing: bool = False


def _entry(raw: list[Any]) -> StoredEntry:
    member, checkpoint, versions, values, writes = raw
    checkpoint_ns, _, checkpoint_id = member.decode().partition(SEPARATOR)
    flat = json.loads(versions)
    blobs: dict[str, TypedValue] = {}
    for channel, value in zip(flat[::2], values, strict=True):
        if value is None:
            continue
        blob = read_blob(value)
        if blob.type != "empty":
            blobs[channel] = blob
    return StoredEntry(
        checkpoint_ns,
        checkpoint_id,
        read_checkpoint(checkpoint),
        blobs,
        [read_write(w) for w in writes if w is not None],
    )


def _selection(reply: list[Any]) -> ThreadSelection:
    if len(reply) == 1:
        return ThreadSelection(partition=None, offset=-1, entries=[], repairing=True)
    partition, offset = reply[0], reply[1]
    return ThreadSelection(
        partition=int(partition) if partition is not None else None,
        offset=int(offset) if offset is not None else -1,
        entries=[_entry(raw) for raw in reply[2:]],
    )


class CheckpointReader:
    """Reads checkpoint threads of one namespace (sync: redis-py; async: redis.asyncio)."""

    def __init__(
        self, client: redis.Redis, namespace: str, *, redis_url: str | None = None
    ) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        self._script = client.register_script(_SELECT)
        self._async_clients = AsyncClients(client, url=redis_url)
        self._async_script: AsyncScript | None = None

    @staticmethod
    def _args(
        checkpoint_ns: str | None, checkpoint_id: str | None, before: str | None, limit: int | None
    ) -> list[Any]:
        return [
            "1" if checkpoint_ns is None else "0",
            checkpoint_ns or "",
            checkpoint_id or "",
            before or "",
            -1 if limit is None else limit,
        ]

    def select(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str | None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> ThreadSelection:
        """Checkpoints of ``thread_id`` newest first, in one round trip.

        Args:
            thread_id: The thread.
            checkpoint_ns: Only this namespace; ``None`` for every namespace
                (in the order they first appeared).
            checkpoint_id: Only this checkpoint.
            before: Only checkpoints with an id below this one.
            limit: At most this many (``None``: all); must be positive.
        """
        keys = [*self.keys.thread(thread_id).all(), self.keys.repairing()]
        try:
            reply = self._script(
                keys=keys, args=self._args(checkpoint_ns, checkpoint_id, before, limit)
            )
        except redis.RedisError as exc:
            raise ReadModelError(f"reading thread {thread_id!r} from Redis failed: {exc}") from exc
        return _selection(reply)

    async def aselect(
        self,
        thread_id: str,
        *,
        checkpoint_ns: str | None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> ThreadSelection:
        """Async :meth:`select`."""
        client = self._async_clients.get()
        if self._async_script is None:
            self._async_script = client.register_script(_SELECT)
        keys = [*self.keys.thread(thread_id).all(), self.keys.repairing()]
        try:
            # One script object for every loop: each call names its loop's client.
            reply = await self._async_script(
                keys=keys, args=self._args(checkpoint_ns, checkpoint_id, before, limit),
                client=client,
            )
        except redis.RedisError as exc:
            raise ReadModelError(f"reading thread {thread_id!r} from Redis failed: {exc}") from exc
        return _selection(reply)

    def threads(self) -> list[str]:
        """Every thread the projector has applied events of, sorted (a SCAN of the namespace)."""
        try:
            keys = self.client.scan_iter(match=self.keys.thread_pattern(), count=1000)
            return sorted({ReadModelKeys.session_of(k.decode()) for k in keys})
        except redis.RedisError as exc:
            raise ReadModelError(f"listing checkpoint threads in Redis failed: {exc}") from exc

    async def athreads(self) -> list[str]:
        """Async :meth:`threads`."""
        client = self._async_clients.get()
        try:
            found = {
                ReadModelKeys.session_of(k.decode())
                async for k in client.scan_iter(match=self.keys.thread_pattern(), count=1000)
            }
        except redis.RedisError as exc:
            raise ReadModelError(f"listing checkpoint threads in Redis failed: {exc}") from exc
        return sorted(found)

    def close(self) -> None:
        """Close the async clients this reader opened (the sync client is the caller's)."""
        self._async_clients.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: closes the running loop's client before returning."""
        await self._async_clients.aclose()
