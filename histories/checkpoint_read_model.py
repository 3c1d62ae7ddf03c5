"""Reading LangGraph checkpoints from the Redis read model: one round trip, sync or async.

One Lua script selects the checkpoints (latest, by id, or a ``list`` page),
follows each checkpoint's channel versions to its blobs and collects its
pending writes, and returns them with the thread's tracking position, so a
read is one round trip and the position covers everything it returned (the
projector updates a thread's keys and position in one atomic script).
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

import redis
from redis.commands.core import AsyncScript

from chatlog.errors import ReadModelError
from chatlog.histories.checkpoint_lineage import LINEAGE_SCRIPT, Lineage, lineage
from chatlog.histories.thread_index import INDEX_SCRIPT, IndexReply, index_reply
from chatlog.keys import ReadModelKeys
from chatlog.redis_clients import AsyncClients, is_cluster
from chatlog.schemas.checkpoint_events import TypedValue
from chatlog.schemas.checkpoint_stored import (
    SEPARATOR,
    StoredCheckpoint,
    StoredWrite,
    read_blob,
    read_checkpoint,
    read_write,
)

# KEYS: CheckpointKeys.all() (10 keys), then the namespace's repairing key (while
# it exists the read model is being rebuilt: the reply is {'R'}); on a Redis
# Cluster the repairing key is in another slot and is not passed (not checked). ARGV: all
# namespaces ('1'/'0'), checkpoint ns, checkpoint id ('' = any), before id
# ('' = none), limit (-1 = none).
# Returns {partition, offset, owner, {member, checkpoint, versions json, {blob}, {write}}...}.
# Index members are "<ns>\0<id>" with score 0, so one namespace's checkpoints
# are the lex range [ns\0, ns\1) and ZREVRANGEBYLEX walks them newest first
# (checkpoint ids are time-ordered UUIDv6 text).
_SELECT = """
local meta, idx, nss, cps, cpv, blobs, w, wi =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local all_ns, cns, cid, before = ARGV[1] == '1', ARGV[2], ARGV[3], ARGV[4]
local remaining = tonumber(ARGV[5])
if #KEYS > 10 and redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {'R'} end
local state = redis.call('HMGET', meta, 'partition', 'offset', 'owner')
local out = {state[1], state[2], state[3] or false}
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
    #: Every ``(channel, version)`` the checkpoint refers to.
    versions: tuple[tuple[str, str], ...] = ()


class ThreadSelection(NamedTuple):
    """The selected checkpoints of a thread, the thread's tracking position and owner.

    ``offset`` and ``partition`` are ``-1`` and ``None`` when the projector
    has applied nothing of the thread; ``owner`` is ``None`` for a thread no
    user owns.
    """

    partition: int | None
    offset: int
    entries: list[StoredEntry]
    owner: str | None = None
    #: The namespace is being repaired: nothing was selected (wait, or raise).
    repairing: bool = False


def stored_entry(raw: list[Any]) -> StoredEntry:
    """A checkpoint read back from its stored parts (the select script's reply shape).

    ``raw`` is the member, the stored checkpoint, the versions JSON, the blob
    values (aligned with the versions' channels, ``None`` when absent) and the writes.
    """
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
        tuple(
            (channel, field.split(SEPARATOR)[2])
            for channel, field in zip(flat[::2], flat[1::2], strict=True)
        ),
    )


def _selection(reply: list[Any]) -> ThreadSelection:
    if len(reply) == 1:
        return ThreadSelection(partition=None, offset=-1, entries=[], repairing=True)
    partition, offset, owner = reply[0], reply[1], reply[2]
    return ThreadSelection(
        partition=int(partition) if partition is not None else None,
        offset=int(offset) if offset is not None else -1,
        entries=[stored_entry(raw) for raw in reply[3:]],
        owner=owner.decode() if owner else None,
    )


class CheckpointReader:
    """Reads checkpoint threads of one namespace (sync: redis-py; async: redis.asyncio)."""

    def __init__(
        self, client: redis.Redis, namespace: str, *, redis_url: str | None = None
    ) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        self._scripts: dict[str, Any] = {}
        self._async_clients = AsyncClients(client, url=redis_url)
        self._async_scripts: dict[str, AsyncScript] = {}

    def _select_keys(self, thread_id: str) -> list[str]:
        """The select script's keys: the repairing key only off a cluster (another slot)."""
        keys = self.keys.thread(thread_id).all()
        return keys if is_cluster(self.client) else [*keys, self.keys.repairing()]

    def _run(self, source: str, keys: list[str], args: list[Any], what: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        try:
            return script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise ReadModelError(f"{what} from Redis failed: {exc}") from exc

    async def _arun(self, source: str, keys: list[str], args: list[Any], what: str) -> Any:
        client = self._async_clients.get()
        script = self._async_scripts.get(source)
        if script is None:
            script = self._async_scripts[source] = client.register_script(source)
        try:
            # One script object for every loop: each call names its loop's client.
            return await script(keys=keys, args=args, client=client)
        except redis.RedisError as exc:
            raise ReadModelError(f"{what} from Redis failed: {exc}") from exc

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
        keys = self._select_keys(thread_id)
        args = self._args(checkpoint_ns, checkpoint_id, before, limit)
        return _selection(self._run(_SELECT, keys, args, f"reading thread {thread_id!r}"))

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
        keys = self._select_keys(thread_id)
        args = self._args(checkpoint_ns, checkpoint_id, before, limit)
        return _selection(await self._arun(_SELECT, keys, args, f"reading thread {thread_id!r}"))

    def lineage(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: list[str]
    ) -> Lineage:
        """The parent chain of a checkpoint for ``channels``, in one round trip."""
        keys = self.keys.thread(thread_id).all()
        args = [checkpoint_ns, checkpoint_id or "", *channels]
        return lineage(self._run(LINEAGE_SCRIPT, keys, args, f"walking thread {thread_id!r}"))

    async def alineage(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None, channels: list[str]
    ) -> Lineage:
        """Async :meth:`lineage`."""
        keys = self.keys.thread(thread_id).all()
        args = [checkpoint_ns, checkpoint_id or "", *channels]
        reply = await self._arun(LINEAGE_SCRIPT, keys, args, f"walking thread {thread_id!r}")
        return lineage(reply)

    def _index_args(
        self, mode: str, user_id: str, index_keys: list[str], threads: list[str]
    ) -> list[Any]:
        meta_prefix, meta_suffix = self.keys.thread("\n").meta.split("\n")
        return [meta_prefix, meta_suffix, mode, user_id, len(index_keys), *index_keys, *threads]

    def user_threads(self, user_id: str, threads: list[str]) -> IndexReply:
        """``user_id``'s live threads newest first, and the positions of ``threads``."""
        args = self._index_args("u", user_id, [self.keys.user_threads(user_id)], threads)
        if is_cluster(self.client):
            return index_reply(self._cluster_index(args, f"listing {user_id!r}'s threads"))
        return index_reply(self._run(INDEX_SCRIPT, [], args, f"listing {user_id!r}'s threads"))

    async def auser_threads(self, user_id: str, threads: list[str]) -> IndexReply:
        """Async :meth:`user_threads`."""
        args = self._index_args("u", user_id, [self.keys.user_threads(user_id)], threads)
        what = f"listing {user_id!r}'s threads"
        if is_cluster(self.client):
            return index_reply(await self._acluster_index(args, what))
        reply = await self._arun(INDEX_SCRIPT, [], args, what)
        return index_reply(reply)

    def run_checkpoints(self, run_ids: list[str], threads: list[str]) -> IndexReply:
        """The ``thread NUL member`` entries of ``run_ids``, and the positions of ``threads``."""
        index_keys = [self.keys.run_checkpoints(run) for run in run_ids]
        args = self._index_args("r", "", index_keys, threads)
        if is_cluster(self.client):
            return index_reply(self._cluster_index(args, "reading the run index"))
        return index_reply(self._run(INDEX_SCRIPT, [], args, "reading the run index"))

    async def arun_checkpoints(self, run_ids: list[str], threads: list[str]) -> IndexReply:
        """Async :meth:`run_checkpoints`."""
        index_keys = [self.keys.run_checkpoints(run) for run in run_ids]
        args = self._index_args("r", "", index_keys, threads)
        if is_cluster(self.client):
            return index_reply(await self._acluster_index(args, "reading the run index"))
        return index_reply(await self._arun(INDEX_SCRIPT, [], args, "reading the run index"))

    def _cluster_index(self, args: list[Any], what: str) -> list[Any]:
        """:data:`INDEX_SCRIPT` on a Redis Cluster (its keys are in other slots).

        The same reads, one command each (routed by slot), in two pipelined
        steps, not atomically.
        """
        try:
            pipe = self.client.pipeline(transaction=False)
            _index_first(pipe, args)
            first = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            found = _index_second(pipe, args, first)
            return _index_result(args, first, found, pipe.execute())
        except redis.RedisError as exc:
            raise ReadModelError(f"{what} from Redis failed: {exc}") from exc

    async def _acluster_index(self, args: list[Any], what: str) -> list[Any]:
        """Async :meth:`_cluster_index`."""
        client = self._async_clients.get()
        try:
            pipe = client.pipeline(transaction=False)
            _index_first(pipe, args)
            first = await pipe.execute()
            pipe = client.pipeline(transaction=False)
            found = _index_second(pipe, args, first)
            return _index_result(args, first, found, await pipe.execute())
        except redis.RedisError as exc:
            raise ReadModelError(f"{what} from Redis failed: {exc}") from exc

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


def _index_first(pipe: Any, args: list[Any]) -> None:
    """The asked-for threads' positions, then each index's entries (INDEX_SCRIPT's ARGV)."""
    meta_p, meta_s, mode, _user, k = args[:5]
    for thread in args[5 + k :]:
        pipe.hmget(f"{meta_p}{thread}{meta_s}", ["partition", "offset"])
    for key in args[5 : 5 + k]:
        if mode == "u":
            pipe.zrevrange(key, 0, -1, withscores=True)
        else:
            pipe.zrange(key, 0, -1)


def _index_second(pipe: Any, args: list[Any], first: list[Any]) -> list[tuple[Any, Any]]:
    """For user mode: each listed thread's owner and expiry (queued on ``pipe``)."""
    meta_p, meta_s, mode, _user, k = args[:5]
    found: list[tuple[Any, Any]] = []
    if mode != "u":
        return found
    for listed in first[len(args) - 5 - k :]:
        for thread, score in listed:
            name = thread.decode() if isinstance(thread, bytes) else thread
            pipe.hmget(f"{meta_p}{name}{meta_s}", ["owner", "expiry"])
            found.append((thread, score))
    return found


def _index_result(
    args: list[Any], first: list[Any], found: list[tuple[Any, Any]], states: list[Any]
) -> list[Any]:
    """The reads of :func:`_index_first` and :func:`_index_second` as INDEX_SCRIPT replies."""
    _meta_p, _meta_s, mode, user, k = args[:5]
    threads = args[5 + k :]
    positions: list[Any] = []
    for thread, state in zip(threads, first[: len(threads)], strict=True):
        positions += (thread.encode(), state[0] or False, state[1] or False)
    entries: list[Any] = []
    if mode == "u":
        now_ms = time.time() * 1000
        for (thread, score), (owner, expiry) in zip(found, states, strict=True):
            ends = float(expiry or 0)
            if owner is not None and owner.decode() == user and (ends == 0 or ends > now_ms):
                entries += (thread, score)
    else:
        for listed in first[len(threads) :]:
            for member in listed:
                entries += (member, 0)
    return [positions, entries]
