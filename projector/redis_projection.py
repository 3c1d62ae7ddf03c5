"""The Redis projection: folds log records into the per-session read model.

:meth:`RedisProjection.apply` is the one "apply an event" in chatlog: the
live projector, replay/rebuild and the tests all call it.

A batch goes to Redis as calls of one Lua script, each covering up to
:data:`SESSIONS_PER_CALL` sessions, all in one round trip. For each session
the script checks and advances the session's tracking position (partition
and last applied offset) in the same step as the view update, so
redelivered events are skipped and never duplicate a message, and it keeps
the owner's session index. The batch's last call then records the
partitions' applied positions (:mod:`chatlog.projector.positions`).
:meth:`RedisProjection.send` writes a batch and returns at once, so the
projector reads its next batch from Kafka while Redis runs this one.

The script builds each session's keys from the templates of
:class:`~chatlog.keys.ReadModelKeys`, so the projection needs a standalone
Redis (or a server that lets a script reach keys it was not given, like
Valkey): Redis Cluster requires every key a script touches to be declared.

Lifecycle rules the script enforces (live projection and replay alike):

* Ownership: the first event with a user id claims an unowned session; an
  event from another user, or without a user id, for an owned session is
  rejected and comes back in ``ApplyResult.failed`` (the worker dead-letters
  it). A rejected event does not advance the session's offset, so a
  redelivery gets the same verdict.
* ``SessionDeleted`` removes the messages and turns the meta hash into a
  tombstone (partition, offset, ``deleted``): redelivered older events are
  skipped, never resurrect the session. A newer write starts the session
  afresh, with its writer as the new owner.
* Idle TTL by event time: after every applied event each key of the session
  expires at (last event time + TTL), the TTL being the session's
  ``SessionTtlSet`` override or the deployment default. A session whose
  expiry is already past (a replay of old events, a projector far behind)
  is deleted on the spot, so replays never bring expired sessions back.
* ``UserDeleted`` removes the user's index entries not newer than the event.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

import redis

from chatlog.errors import ChatLogError, ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.projector.changes import EVENT_TYPES, Change, change_of
from chatlog.projector.raw_pipeline import Command, PendingScripts, ScriptBatch
from chatlog.schemas.events import ChatEvent

#: Sessions per script call: a script runs alone, so a call must not keep
#: readers waiting long (64 one-message sessions take Redis well under a
#: millisecond), and must be big enough that the per-call cost is small.
SESSIONS_PER_CALL = 64

# ARGV: the messages, meta and user-index key templates (prefix, suffix
# around the id: six strings), the default TTL in ms (0: none), now in ms,
# the positions key, the number P of position pairs, P x (partition, next
# offset), the number U of user deletions, U x (user, event ms), then per
# session: session id, partition, event count n, n x (offset, op, arg,
# event ms, user). Ops as in chatlog.projector.changes.
# Returns {applied, skipped, then a (session number in this call, code,
# value) triple per thing the caller must know}: S skipped events (the
# oldest), O the owner (before R), R a rejected event's offset, P the
# partition the session is tracked on (the session is not applied), E an
# error that stopped the session.
_APPLY = """
local msgs_p, msgs_s, meta_p, meta_s, user_p, user_s =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local default_ttl = tonumber(ARGV[7])
local now = tonumber(ARGV[8])
local positions = ARGV[9]
local npos = tonumber(ARGV[10])
local users_at = 12 + 2 * npos
local nusers = tonumber(ARGV[users_at - 1])
local total_applied, total_skipped = 0, 0
local notes = {}

local function note(index, code, value)
  notes[#notes + 1] = index
  notes[#notes + 1] = code
  notes[#notes + 1] = value
end

local function apply_session(index, sid, partition, first, stop)
  local msgs, meta = msgs_p .. sid .. msgs_s, meta_p .. sid .. meta_s
  local state = redis.call('HMGET', meta, 'partition', 'offset', 'count', 'owner',
    'updated_at', 'deleted', 'ttl_ms', 'created_at', 'expiry')
  if state[1] and state[1] ~= partition then
    note(index, 'P', state[1])
    return
  end
  local last = tonumber(state[2] or '-1')
  local count = tonumber(state[3] or '0')
  local owner = state[4] or ''
  local former = owner
  local active = tonumber(state[5] or '0')
  local deleted = state[6] and true or false
  local was_deleted = deleted
  local ttl = state[7] or ''
  local applied, skipped = 0, 0
  local rejected = {}
  local pending = {}
  -- Everyone who owned the session during the batch: their index entries go
  -- unless they still own it at the end.
  local dropped = {}
  local clear, restarted = false, false
  local first_ms = nil
  for i = first, stop, 5 do
    local offset = tonumber(ARGV[i])
    local user = ARGV[i + 4]
    if offset <= last then
      skipped = skipped + 1
    elseif owner ~= '' and user ~= owner then
      rejected[#rejected + 1] = offset
    else
      local op = ARGV[i + 1]
      local ms = tonumber(ARGV[i + 3])
      if op == 'D' then
        if owner ~= '' then dropped[#dropped + 1] = owner end
        pending, clear, count = {}, true, 0
        former, owner, ttl = owner, '', ''
        deleted, first_ms = true, nil
      else
        if deleted then
          deleted, restarted = false, true
        end
        if owner == '' and user ~= '' then owner = user end
        first_ms = first_ms or ms
        if op == 'A' then
          pending[#pending + 1] = ARGV[i + 2]
          count = count + 1
        elseif op == 'C' then
          pending, clear, count = {}, true, 0
        elseif op == 'T' then
          ttl = ARGV[i + 2]
        end
      end
      if ms > active then active = ms end
      last = offset
      applied = applied + 1
    end
  end
  local gone = deleted
  if applied > 0 then
    local ttl_ms = default_ttl
    if ttl ~= '' then ttl_ms = tonumber(ttl) end
    local expires = 0
    if ttl_ms > 0 then expires = active + ttl_ms end
    if clear then redis.call('DEL', msgs) end
    for i = 1, #pending, 1000 do
      redis.call('RPUSH', msgs, unpack(pending, i, math.min(i + 999, #pending)))
    end
    if deleted then
      -- The tombstone keeps only the tracking position: nothing of the user.
      redis.call('DEL', meta)
      redis.call('HSET', meta, 'partition', partition, 'offset', last, 'deleted', active)
    else
      -- One HSET and at most one HDEL: each redis.call costs the script about
      -- a microsecond, the bulk of its time in the common one-append case.
      -- expiry: when the keys expire, 0 for never (then they need no PERSIST).
      local fields = {'partition', partition, 'offset', last, 'count', count,
        'updated_at', active, 'expiry', expires}
      if first_ms and (restarted or not state[8]) then
        fields[#fields + 1] = 'created_at'
        fields[#fields + 1] = first_ms
      end
      if owner ~= '' then
        fields[#fields + 1] = 'owner'
        fields[#fields + 1] = owner
      end
      local gone_fields = {}
      if ttl ~= '' then
        fields[#fields + 1] = 'ttl_ms'
        fields[#fields + 1] = ttl
      elseif state[7] then
        gone_fields[#gone_fields + 1] = 'ttl_ms'
      end
      if was_deleted then gone_fields[#gone_fields + 1] = 'deleted' end
      redis.call('HSET', meta, unpack(fields))
      if #gone_fields > 0 then redis.call('HDEL', meta, unpack(gone_fields)) end
    end
    if ttl_ms > 0 then
      if expires <= now then
        -- Judged by event time: a replay of an idle-expired session must not revive it.
        redis.call('DEL', msgs, meta)
        if not deleted then former = owner end
        gone = true
      else
        redis.call('PEXPIREAT', msgs, expires)
        redis.call('PEXPIREAT', meta, expires)
      end
    elseif deleted or state[9] ~= '0' then
      -- The keys may carry an expiry: a tombstone, a session that had a TTL,
      -- or one written before the expiry field existed.
      redis.call('PERSIST', msgs)
      redis.call('PERSIST', meta)
    end
    -- The owner's session index, kept after the verdicts: only the owner at
    -- the end of the batch lists the session.
    local final = owner
    if gone then
      final = ''
      if owner ~= '' then dropped[#dropped + 1] = owner end
    end
    for i = 1, #dropped do
      if dropped[i] ~= final then redis.call('ZREM', user_p .. dropped[i] .. user_s, sid) end
    end
    if final ~= '' then redis.call('ZADD', user_p .. final .. user_s, 'GT', active, sid) end
  end
  total_applied = total_applied + applied
  total_skipped = total_skipped + skipped
  if skipped > 0 then note(index, 'S', skipped) end
  if #rejected > 0 then
    note(index, 'O', gone and former or owner)
    for i = 1, #rejected do note(index, 'R', rejected[i]) end
  end
end

local i = users_at + 2 * nusers
local index = 0
while i <= #ARGV do
  index = index + 1
  local stop = i + 2 + 5 * tonumber(ARGV[i + 2])
  local ok, err = pcall(apply_session, index, ARGV[i], ARGV[i + 1], i + 3, stop)
  if not ok then
    note(index, 'E', type(err) == 'table' and (err.err or 'error') or tostring(err))
  end
  i = stop + 1
end
-- After every session of the batch: a deleted user's entries not newer than
-- the deletion (a redelivered UserDeleted must not hide later sessions).
for k = users_at, users_at + 2 * nusers - 1, 2 do
  redis.call('ZREMRANGEBYSCORE', user_p .. ARGV[k] .. user_s, '-inf', ARGV[k + 1])
end
-- Last: the applied positions, which only ever move forward.
for k = 11, 10 + 2 * npos, 2 do
  local current = tonumber(redis.call('HGET', positions, ARGV[k]) or '-1')
  if tonumber(ARGV[k + 1]) > current then
    redis.call('HSET', positions, ARGV[k], ARGV[k + 1])
  end
end
local reply = {total_applied, total_skipped}
for k = 1, #notes do reply[#reply + 1] = notes[k] end
return reply
"""


_OP = itemgetter(5)  # Change.op, read at C speed


class LogRecord(NamedTuple):
    """A decoded event with its coordinates in the log."""

    partition: int
    offset: int
    event: ChatEvent


@dataclass(slots=True)
class ApplyResult:
    """What one :meth:`RedisProjection.apply` call did."""

    applied: int = 0
    skipped: int = 0
    #: Records that were not applied, with the reason (the worker dead-letters them).
    failed: list[tuple[Change | LogRecord, str]] = field(default_factory=list)
    applied_by_type: dict[str, int] = field(default_factory=dict)
    skipped_by_type: dict[str, int] = field(default_factory=dict)
    #: The changes applied to the read model (for end-to-end latency metrics).
    applied_records: list[Change] = field(default_factory=list)


class PendingApply:
    """A batch written to Redis whose verdicts are not read yet.

    :meth:`RedisProjection.send` returns it; :meth:`result` reads the replies
    (blocking until Redis ran the batch). Redis runs what it was sent in
    order, so a batch sent after this one sees everything this one did.
    """

    def __init__(
        self,
        result: ApplyResult,
        changes: list[Change],
        sessions: list[str],
        pending: PendingScripts | None,
    ) -> None:
        self._result = result
        self._changes = changes
        self._sessions = sessions
        self._pending = pending

    def result(self) -> ApplyResult:
        """The batch's :class:`ApplyResult` once Redis ran it.

        Raises:
            redis.ConnectionError: Redis is unreachable (after the client's retries);
                sending the same records again is safe.
            redis.TimeoutError: Redis did not answer in time; the same.
            ReadModelError: any other Redis failure.
        """
        result = self._result
        if self._pending is None:
            return result
        replies = self._pending.replies()
        self._pending = None
        notes: list[tuple[int, bytes, Any]] = []
        for call, reply in enumerate(replies):
            if isinstance(reply, Exception):
                raise ReadModelError(f"applying a batch to Redis failed: {reply}")
            result.applied += reply[0]
            result.skipped += reply[1]
            base = call * SESSIONS_PER_CALL - 1
            notes += [
                (base + reply[k], reply[k + 1], reply[k + 2]) for k in range(2, len(reply), 3)
            ]
        if not notes:
            # The common case: every change applied.
            result.applied_records = self._changes
        else:
            result.applied_records = self._sort_out(notes)
        counts = Counter(map(_OP, result.applied_records))
        result.applied += counts.get("U", 0)
        result.applied_by_type = {EVENT_TYPES[op]: n for op, n in counts.items()}
        return result

    def _sort_out(self, notes: list[tuple[int, bytes, Any]]) -> list[Change]:
        """Attribute skipped, rejected and failed changes to their sessions; return the applied."""
        result = self._result
        by_session: dict[str, list[Change]] = {}
        for change in self._changes:
            by_session.setdefault(change.session_id, []).append(change)
        left_out: set[tuple[str, int]] = set()
        owners: dict[str, str] = {}
        for number, code, value in notes:
            session_id = self._sessions[number]
            changes = by_session[session_id]
            if code == b"S":
                for change in changes[:value]:  # offsets only grow: the skipped are the oldest
                    left_out.add((session_id, change.offset))
                    name = change.event_type
                    result.skipped_by_type[name] = result.skipped_by_type.get(name, 0) + 1
            elif code == b"O":
                owners[session_id] = _text(value)
            elif code == b"R":
                change = next(c for c in changes if c.offset == value)
                left_out.add((session_id, change.offset))
                result.failed.append((change, _ownership_reason(change, owners[session_id])))
            else:
                if code == b"P":
                    why = f"the session is tracked on partition {_text(value)}, the event " \
                        f"comes from partition {changes[0].partition} (PARTITION)"
                else:
                    why = _text(value)
                reason = f"session {session_id!r} not applied: {why}"
                for change in changes:
                    left_out.add((session_id, change.offset))
                    result.failed.append((change, reason))
        return [c for c in self._changes if (c.session_id, c.offset) not in left_out]


class RedisProjection:
    """Applies log records to the read model of one namespace.

    Raises :class:`redis.exceptions.ConnectionError` and
    :class:`redis.exceptions.TimeoutError` unchanged from :meth:`apply`, so the
    caller can retry the whole batch (it is idempotent); any other Redis
    failure becomes :class:`ReadModelError`.
    """

    def __init__(
        self, client: redis.Redis, namespace: str, *, session_ttl_s: float | None = None
    ) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        #: The deployment's idle TTL in milliseconds (0: sessions never expire).
        self.session_ttl_ms = int(session_ttl_s * 1000) if session_ttl_s else 0
        self._script = ScriptBatch(client, _APPLY, "applying a batch to Redis")
        # The key layout stays in ReadModelKeys: the script gets each key
        # kind as the text around an id and puts the id in between.
        self._templates: list[str] = []
        for key in (self.keys.messages, self.keys.meta, self.keys.user_sessions):
            prefix, suffix = key("\x00").split("\x00")
            self._templates += [prefix, suffix]

    def apply(
        self,
        records: Sequence[Change | LogRecord],
        *,
        advance: Mapping[int, int] | None = None,
    ) -> ApplyResult:
        """Apply ``records`` (in log order) idempotently; one Redis round trip.

        Records that cannot be applied are returned in ``ApplyResult.failed``
        with the reason, for the dead-letter topic; the others are applied.
        ``advance`` (partition -> next offset) is recorded as the namespace's
        applied positions after the records, in the same round trip.
        """
        return self.send(records, advance=advance).result()

    def send(
        self,
        records: Sequence[Change | LogRecord],
        *,
        advance: Mapping[int, int] | None = None,
    ) -> PendingApply:
        """Write ``records`` to Redis and return before Redis answers (see :meth:`apply`).

        Raises:
            redis.ConnectionError, redis.TimeoutError, ReadModelError: as :meth:`apply`.
        """
        result = ApplyResult()
        changes: list[Change] = []
        sessions: dict[str, list[Any]] = {}
        users: list[Any] = []
        # Per record this loop is the projector's hottest Python: one pass,
        # each session's script arguments built as the records come.
        for record in records:
            if type(record) is not Change:
                try:
                    record = change_of(*record)
                except ChatLogError as exc:
                    result.failed.append((record, str(exc)))
                    continue
            change: Change = record
            op = change.op
            if op == "U":
                if not change.user_id:
                    result.failed.append((change, "UserDeleted without a user id"))
                    continue
                users += (change.user_id, change.event_ms)
            else:
                args = sessions.get(change.session_id)
                if args is None:
                    sessions[change.session_id] = [
                        change.session_id, change.partition, 1,
                        change.offset, op, change.arg, change.event_ms, change.user_id,
                    ]
                else:
                    args[2] += 1
                    args += (change.offset, op, change.arg, change.event_ms, change.user_id)
            changes.append(change)
        pending = None
        if sessions or users or advance:
            pending = self._script.send(
                partial(self._commands, list(sessions.values()), users, advance or {},
                        int(time.time() * 1000))
            )
        return PendingApply(result, changes, list(sessions), pending)

    def _commands(
        self,
        sessions: list[list[Any]],
        users: list[Any],
        advance: Mapping[int, int],
        now_ms: int,
        sha: str,
    ) -> Iterator[Command]:
        """The batch's script calls; the last one also deletes users and advances positions."""
        head = ("EVALSHA", sha, 0, *self._templates, self.session_ttl_ms, now_ms)
        calls = range(0, max(len(sessions), 1), SESSIONS_PER_CALL)
        last = calls[-1]
        for start in calls:
            argv: list[Any] = []
            for args in sessions[start : start + SESSIONS_PER_CALL]:
                argv += args
            if start != last:
                yield (*head, "", 0, 0, *argv)
                continue
            pairs: list[int] = []
            for partition, offset in advance.items():
                pairs += (partition, offset)
            yield (
                *head, self.keys.positions(), len(advance), *pairs,
                len(users) // 2, *users, *argv,
            )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ownership_reason(change: Change, owner: str) -> str:
    writer = change.user_id
    who = f"user {writer!r}" if writer else "a writer without a user id"
    return (
        f"ownership: session {change.session_id!r} belongs to user {owner!r}; "
        f"{who} may not change it (SessionOwnershipError)"
    )


def wait_for_redis(client: redis.Redis, timeout_s: float) -> None:
    """Block until ``client`` answers PING, or raise :class:`ReadModelError`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            if time.monotonic() >= deadline:
                raise ReadModelError(f"Redis did not answer within {timeout_s:g}s: {exc}") from exc
            time.sleep(0.1)
