"""``get_delta_channel_history`` in one round trip: the parent chain walked inside Redis.

LangGraph's default walks ``get_tuple`` once per ancestor. Here one script
follows each stored checkpoint's parent id (the fifth field of its frame,
:func:`chatlog.schemas.checkpoint_stored.stored_checkpoint`) from the target's
parent towards the root, and returns per ancestor its pending writes and the
non-empty values of the channels still looking for a seed; it stops once
every channel has one. Python then applies ``InMemorySaver``'s rules to the
reply (:func:`delta_history`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from langgraph.checkpoint.base import DeltaChannelHistory, PendingWrite, writes_sort_key

from chatlog.schemas.checkpoint_events import TypedValue
from chatlog.schemas.checkpoint_stored import SEPARATOR, StoredWrite, read_blob, read_write

# KEYS: CheckpointKeys.all(). ARGV: checkpoint ns, checkpoint id ('' = latest), channels...
# Returns {partition, offset, owner, {member, {write}, {channel, blob}...}...}.
LINEAGE_SCRIPT = """
local meta, idx, cps, cpv, blobs, w, wi =
  KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local ns, cid = ARGV[1], ARGV[2]
local state = redis.call('HMGET', meta, 'partition', 'offset', 'owner')
local out = {state[1], state[2], state[3] or false}
local member
if cid ~= '' then
  member = ns .. '\\0' .. cid
else
  local latest = redis.call('ZREVRANGEBYLEX', idx, '(' .. ns .. '\\1', '[' .. ns .. '\\0',
    'LIMIT', 0, 1)
  member = latest[1]
end
if not member then return out end
local function field(data, wanted)
  local pos, len = 1, 0
  for _ = 1, wanted - 1 do
    len, pos = struct.unpack('>I4', data, pos)
    pos = pos + len
  end
  len, pos = struct.unpack('>I4', data, pos)
  return string.sub(data, pos, pos + len - 1)
end
local remaining, left = {}, 0
for j = 3, #ARGV do
  if not remaining[ARGV[j]] then left = left + 1 end
  remaining[ARGV[j]] = true
end
local stored = redis.call('HGET', cps, member)
while stored and left > 0 do
  local parent = field(stored, 5)
  if parent == '' then break end
  member = ns .. '\\0' .. parent
  stored = redis.call('HGET', cps, member)
  if not stored then break end
  local wfields = redis.call('ZRANGEBYLEX', wi, '[' .. member .. '\\0', '(' .. member .. '\\1')
  local writes = {}
  if #wfields > 0 then writes = redis.call('HMGET', w, unpack(wfields)) end
  local seeds = {}
  local flat = cjson.decode(redis.call('HGET', cpv, member) or '[]')
  for k = 1, #flat, 2 do
    if remaining[flat[k]] then
      local blob = redis.call('HGET', blobs, flat[k + 1])
      if blob and field(blob, 1) ~= 'empty' then
        seeds[#seeds + 1] = flat[k]
        seeds[#seeds + 1] = blob
      end
    end
  end
  out[#out + 1] = {member, writes, seeds}
  for k = 1, #seeds, 2 do
    remaining[seeds[k]] = nil
    left = left - 1
  end
end
return out
"""


class Ancestor(NamedTuple):
    """One ancestor on the path: its id, its writes and the seeds found there."""

    checkpoint_id: str
    writes: list[StoredWrite]
    seeds: dict[str, TypedValue]


class Lineage(NamedTuple):
    """The walked chain, nearest ancestor first, with the thread's position and owner."""

    partition: int | None
    offset: int
    owner: str | None
    ancestors: list[Ancestor]


def lineage(reply: list[Any]) -> Lineage:
    """Parse :data:`LINEAGE_SCRIPT`'s reply."""
    partition, offset, owner = reply[0], reply[1], reply[2]
    ancestors = []
    for member, writes, seeds in reply[3:]:
        ancestors.append(
            Ancestor(
                member.decode().split(SEPARATOR)[1],
                [read_write(w) for w in writes if w is not None],
                {
                    seeds[k].decode(): read_blob(seeds[k + 1])
                    for k in range(0, len(seeds), 2)
                },
            )
        )
    return Lineage(
        int(partition) if partition is not None else None,
        int(offset) if offset is not None else -1,
        owner.decode() if owner else None,
        ancestors,
    )


def delta_history(
    walked: Lineage, channels: Sequence[str], loads: Callable[[TypedValue], Any]
) -> dict[str, DeltaChannelHistory]:
    """Per channel, on-path writes oldest first and the nearest seed, as ``InMemorySaver``."""
    collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
    seeds: dict[str, Any] = {}
    remaining = set(channels)
    for ancestor in walked.ancestors:
        if not remaining:
            break
        ordered = sorted(
            ancestor.writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx)
        )
        for write in reversed(ordered):
            if write.channel in remaining:
                collected[write.channel].append((write.task_id, write.channel, loads(write.value)))
        for channel, value in ancestor.seeds.items():
            if channel in remaining:
                seeds[channel] = loads(value)
                remaining.discard(channel)
    result: dict[str, DeltaChannelHistory] = {}
    for channel in channels:
        entry: DeltaChannelHistory = {"writes": list(reversed(collected[channel]))}
        if channel in seeds:
            entry["seed"] = seeds[channel]
        result[channel] = entry
    return result
