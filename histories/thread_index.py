"""The read model's thread indexes: a user's threads, a run's checkpoints, and positions.

``ChatLogCheckpointSaver.threads(user)`` reads ``<ns>:u:{user}:threads`` (a
sorted set the projector keeps by the time of each thread's last event, the
threads' twin of ``<ns>:u:{user}:sessions``) and ``delete_for_runs`` reads
``<ns>:r:{run}:checkpoints``; neither SCANs. The same script returns the
tracking positions of the threads the reading saver wrote, so the saver can
wait for its own writes in the same round trip.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple

from chatlog.schemas.checkpoint_stored import SEPARATOR

# ARGV: meta key prefix, suffix, mode ('u': user threads, 'r': run checkpoints),
# user id (mode 'u'), the number k of index keys, the k index keys, then thread
# ids whose positions to return. Index keys are named in ARGV, not KEYS, like
# the user index of the chat projection: they live in other slots than the threads.
# Returns {{thread, partition, offset}..., {entry, score}...} flattened as two lists.
INDEX_SCRIPT = """
local meta_p, meta_s, mode, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = tonumber(ARGV[5])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local positions, entries = {}, {}
for j = 6 + k, #ARGV do
  local state = redis.call('HMGET', meta_p .. ARGV[j] .. meta_s, 'partition', 'offset')
  positions[#positions + 1] = ARGV[j]
  positions[#positions + 1] = state[1] or false
  positions[#positions + 1] = state[2] or false
end
for j = 6, 5 + k do
  if mode == 'u' then
    local found = redis.call('ZREVRANGE', ARGV[j], 0, -1, 'WITHSCORES')
    for i = 1, #found, 2 do
      local thread = found[i]
      local state = redis.call('HMGET', meta_p .. thread .. meta_s, 'owner', 'expiry')
      local expiry = tonumber(state[2] or '0')
      if state[1] == user and (expiry == 0 or expiry > now_ms) then
        entries[#entries + 1] = thread
        entries[#entries + 1] = found[i + 1]
      end
    end
  else
    for _, member in ipairs(redis.call('ZRANGE', ARGV[j], 0, -1)) do
      entries[#entries + 1] = member
      entries[#entries + 1] = '0'
    end
  end
end
return {positions, entries}
"""


class ThreadInfo(NamedTuple):
    """One thread of a user: its id and the time of its last event."""

    thread_id: str
    last_active: datetime


class IndexReply(NamedTuple):
    """An index read: index entries and the tracking positions of the asked-for threads."""

    entries: list[tuple[str, float]]
    positions: dict[str, tuple[int | None, int]]


def index_reply(reply: list[Any]) -> IndexReply:
    """Parse :data:`INDEX_SCRIPT`'s reply."""
    flat_positions, flat_entries = reply
    positions: dict[str, tuple[int | None, int]] = {}
    for j in range(0, len(flat_positions), 3):
        thread, partition, offset = flat_positions[j : j + 3]
        positions[thread.decode()] = (
            int(partition) if partition else None,
            int(offset) if offset else -1,
        )
    entries = [
        (flat_entries[j].decode(), float(flat_entries[j + 1]))
        for j in range(0, len(flat_entries), 2)
    ]
    return IndexReply(entries, positions)


def thread_infos(reply: IndexReply) -> list[ThreadInfo]:
    """A user index reply as threads, newest first."""
    return [
        ThreadInfo(thread, datetime.fromtimestamp(score / 1000, tz=timezone.utc))
        for thread, score in reply.entries
    ]


def run_checkpoints(reply: IndexReply) -> dict[str, list[tuple[str, str]]]:
    """A run index reply as ``{thread: [(checkpoint_ns, checkpoint_id), ...]}``."""
    found: dict[str, list[tuple[str, str]]] = {}
    for entry, _ in reply.entries:
        thread, checkpoint_ns, checkpoint_id = entry.split(SEPARATOR)
        found.setdefault(thread, []).append((checkpoint_ns, checkpoint_id))
    return found
