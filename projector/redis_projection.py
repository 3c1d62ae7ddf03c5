"""The Redis projection: folds log records into the per-session read model.

:meth:`RedisProjection.apply` is the one "apply an event" in chatlog: the
live projector, replay/rebuild and the tests all call it.

Each session's events of a batch are applied by one Lua script call that
checks and advances the session's tracking position (partition and last
applied offset) in the same atomic step as the view update, so redelivered
events are skipped and never duplicate a message. All sessions of a batch go
to Redis in one pipeline: one round trip per batch, not per event.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from chatlog.errors import ChatLogError, ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.projector.raw_pipeline import Command, ScriptBatch
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    UserDeleted,
)
from chatlog.schemas.stored import stored_message

# ARGV: partition, default TTL ms (0: none), now ms, then
# (offset, op, arg, event_ms, user) per event; op A append, C clear,
# D delete, T set TTL (arg: ms, "" for the default).
# Returns {applied, skipped, gone, owner, rejected offset...}: gone is 1 when
# the session no longer exists (deleted or expired), owner the session's
# owner ("" none; for a gone session the owner it had).
# An error reply rejects the whole call and changes nothing, since the
# checks run before the first write.
_APPLY = """
local msgs, meta = KEYS[1], KEYS[2]
local partition = ARGV[1]
local default_ttl = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', meta, 'partition', 'offset', 'count', 'owner',
  'updated_at', 'deleted', 'ttl_ms', 'created_at')
if state[1] and state[1] ~= partition then
  return redis.error_reply('PARTITION session is tracked on partition ' .. state[1] ..
    ', event comes from partition ' .. partition)
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
local clear, restarted = false, false
local first_ms = nil
for i = 4, #ARGV, 5 do
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
local gone = deleted and 1 or 0
if applied > 0 then
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
    local fields = {'partition', partition, 'offset', last, 'count', count,
      'updated_at', active}
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
  local ttl_ms = default_ttl
  if ttl ~= '' then ttl_ms = tonumber(ttl) end
  if ttl_ms > 0 then
    local expires = active + ttl_ms
    if expires <= now then
      -- Judged by event time: a replay of an idle-expired session must not revive it.
      redis.call('DEL', msgs, meta)
      if not deleted then former = owner end
      gone = 1
    else
      redis.call('PEXPIREAT', msgs, expires)
      redis.call('PEXPIREAT', meta, expires)
    end
  else
    redis.call('PERSIST', msgs)
    redis.call('PERSIST', meta)
  end
end
local reply = {applied, skipped, gone, gone == 1 and former or owner}
for i = 1, #rejected do reply[#reply + 1] = rejected[i] end
return reply
"""


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
    failed: list[tuple[LogRecord, str]] = field(default_factory=list)
    applied_by_type: dict[str, int] = field(default_factory=dict)
    skipped_by_type: dict[str, int] = field(default_factory=dict)
    #: The records that changed the read model (for end-to-end latency metrics).
    applied_records: list[LogRecord] = field(default_factory=list)


def _event_ms(record: LogRecord) -> int:
    return int(record.event.occurred_at.timestamp() * 1000)


class _SessionBatch:
    """One session's share of a batch: its records, their script arguments, their writers."""

    __slots__ = ("argv", "last_ms", "partition", "records", "users")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.records: list[LogRecord] = []
        #: (offset, op, arg, event ms, user) per record, flattened for the script's ARGV.
        self.argv: list[Any] = []
        self.users: set[str] = set()
        self.last_ms = 0


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

    def apply(self, records: Sequence[LogRecord]) -> ApplyResult:
        """Apply ``records`` (in log order) idempotently; one Redis round trip.

        Records whose content cannot be applied are returned in
        ``ApplyResult.failed`` with the reason, for the dead-letter topic; the
        others are applied.
        """
        result = ApplyResult()
        sessions: dict[str, _SessionBatch] = {}
        user_deletions: list[LogRecord] = []
        # Per record this loop is the projector's hottest Python: one pass, no
        # intermediate lists, the message rendered once.
        for record in records:
            event = record.event
            payload = event.payload
            if isinstance(payload, MessageAppended):
                op = "A"
                try:
                    arg = stored_message(payload)
                except ChatLogError as exc:
                    result.failed.append((record, str(exc)))
                    continue
            elif isinstance(payload, UserDeleted):
                if event.user_id:
                    user_deletions.append(record)
                else:
                    result.failed.append((record, "UserDeleted without a user id"))
                continue
            else:
                try:
                    op, arg = _lifecycle_arguments(record)
                except ChatLogError as exc:
                    result.failed.append((record, str(exc)))
                    continue
            session = sessions.get(event.session_id)
            if session is None:
                session = sessions[event.session_id] = _SessionBatch(record.partition)
            user = event.user_id or ""
            ms = int(event.occurred_at.timestamp() * 1000)
            session.records.append(record)
            session.argv += (record.offset, op, arg, ms, user)
            if user:
                session.users.add(user)
            session.last_ms = ms
        if not sessions and not user_deletions:
            return result
        replies = self._execute(sessions, user_deletions)
        stale: dict[str, set[str]] = {}
        applied_records = result.applied_records
        skipped_by_type = result.skipped_by_type
        for (session_id, session), reply in zip(sessions.items(), replies, strict=True):
            if isinstance(reply, Exception):
                reason = f"session {session_id!r} not applied: {reply}"
                result.failed.extend((record, reason) for record in session.records)
                continue
            applied, skipped, gone = int(reply[0]), int(reply[1]), int(reply[2])
            owner = _text(reply[3])
            result.applied += applied
            result.skipped += skipped
            if skipped == 0 and len(reply) == 4:
                applied_records += session.records  # the normal case: all applied
            else:
                rejected = {int(offset) for offset in reply[4:]}
                # Offsets only grow within a session, so the skipped events are the oldest.
                for index, record in enumerate(session.records):
                    if index < skipped:
                        name = record.event.event_type
                        skipped_by_type[name] = skipped_by_type.get(name, 0) + 1
                    elif record.offset in rejected:
                        result.failed.append((record, _ownership_reason(record, owner)))
                    else:
                        applied_records.append(record)
            # The batch's ZADDs ran before the script's verdict was known: take
            # back the index entries of a gone session and of rejected writers.
            users = session.users
            if gone:
                users = users | {owner}
            elif owner in users:
                users = users - {owner} if len(users) > 1 else set()
            users.discard("")
            if users:
                stale[session_id] = users
        if stale:
            self._unindex(stale)
        result.applied += len(user_deletions)
        applied_records += user_deletions
        result.applied_by_type = _count_types(applied_records)
        return result

    def _unindex(self, stale: dict[str, set[str]]) -> None:
        """Remove sessions from user indexes (rare: deletions, expiries, rejections)."""
        pipe = self.client.pipeline(transaction=False)
        for session_id, users in stale.items():
            for user in users:
                pipe.zrem(self.keys.user_sessions(user), session_id)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except redis.RedisError as exc:
            raise ReadModelError(f"updating a user's session index failed: {exc}") from exc

    def _execute(
        self, sessions: dict[str, _SessionBatch], user_deletions: Sequence[LogRecord] = ()
    ) -> list[Any]:
        """Run every session's script in one round trip; return the script replies in order."""
        now_ms = int(time.time() * 1000)
        replies = self._script.run(
            lambda sha: self._commands(sessions, user_deletions, now_ms, sha)
        )
        for reply in replies[len(sessions) :]:
            if isinstance(reply, Exception):
                raise ReadModelError(f"updating a user's session index failed: {reply}")
        return replies[: len(sessions)]

    def _commands(
        self,
        sessions: dict[str, _SessionBatch],
        user_deletions: Sequence[LogRecord],
        now_ms: int,
        sha: str,
    ) -> Iterator[Command]:
        """The batch's commands: each session's script call, then the user index updates."""
        keys, ttl_ms = self.keys, self.session_ttl_ms
        for session_id, session in sessions.items():
            # A session's events all come from one partition unless the topic
            # was repartitioned; the script refuses the mismatch.
            yield (
                "EVALSHA", sha, 2, keys.messages(session_id), keys.meta(session_id),
                session.partition, ttl_ms, now_ms, *session.argv,
            )
        for session_id, session in sessions.items():
            for user in session.users:
                yield ("ZADD", keys.user_sessions(user), "GT", session.last_ms, session_id)
        for record in user_deletions:
            # Only entries not newer than the deletion: a redelivered
            # UserDeleted must not hide sessions the user started since.
            assert record.event.user_id is not None
            yield (
                "ZREMRANGEBYSCORE", keys.user_sessions(record.event.user_id), "-inf",
                _event_ms(record),
            )


def _lifecycle_arguments(record: LogRecord) -> tuple[str, str]:
    """The script's (op, arg) for an event other than a message or a user deletion."""
    payload = record.event.payload
    if isinstance(payload, SessionCleared):
        return "C", ""
    if isinstance(payload, SessionDeleted):
        return "D", ""
    if isinstance(payload, SessionTtlSet):
        return "T", "" if payload.ttl_ms is None else str(max(payload.ttl_ms, 0))
    raise ReadModelError(f"no projection for event type {record.event.event_type}")


def _count_types(records: list[LogRecord]) -> dict[str, int]:
    counts: dict[type, int] = {}
    for record in records:
        kind = type(record.event.payload)
        counts[kind] = counts.get(kind, 0) + 1
    return {kind.__name__: count for kind, count in counts.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ownership_reason(record: LogRecord, owner: str) -> str:
    writer = record.event.user_id
    who = f"user {writer!r}" if writer else "a writer without a user id"
    return (
        f"ownership: session {record.event.session_id!r} belongs to user {owner!r}; "
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
