"""The Redis projection: folds log records into the per-session read model.

:meth:`RedisProjection.apply` is the one "apply an event" in chatlog: the
live projector, replay/rebuild and the tests all call it.

Each session's events of a batch are applied by one Lua script call that
checks and advances the session's tracking position (partition and last
applied offset) in the same atomic step as the view update, so redelivered
events are skipped and never duplicate a message. All sessions of a batch go
to Redis in one pipeline: one round trip per batch, not per event.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from redis.exceptions import NoScriptError

from chatlog.errors import ChatLogError, ReadModelError
from chatlog.keys import ReadModelKeys
from chatlog.schemas.events import ChatEvent, MessageAppended, SessionCleared
from chatlog.schemas.stored import stored_message

# ARGV: partition, owner ("" for none), then (offset, op, arg, event_ms) per event.
# Returns {applied, skipped}. An error reply rejects the whole call and
# changes nothing, since the checks run before the first write.
_APPLY = """
local msgs, meta = KEYS[1], KEYS[2]
local partition = ARGV[1]
local state = redis.call('HMGET', meta, 'partition', 'offset', 'count')
if state[1] and state[1] ~= partition then
  return redis.error_reply('PARTITION session is tracked on partition ' .. state[1] ..
    ', event comes from partition ' .. partition)
end
local last = tonumber(state[2] or '-1')
local count = tonumber(state[3] or '0')
local applied, skipped = 0, 0
local pending = {}
local first_ms, last_ms = nil, nil
for i = 3, #ARGV, 4 do
  local offset = tonumber(ARGV[i])
  if offset <= last then
    skipped = skipped + 1
  else
    local op = ARGV[i + 1]
    if op == 'A' then
      pending[#pending + 1] = ARGV[i + 2]
      count = count + 1
    elseif op == 'C' then
      pending = {}
      redis.call('DEL', msgs)
      count = 0
    end
    last = offset
    applied = applied + 1
    last_ms = ARGV[i + 3]
    first_ms = first_ms or last_ms
  end
end
for i = 1, #pending, 1000 do
  redis.call('RPUSH', msgs, unpack(pending, i, math.min(i + 999, #pending)))
end
if applied > 0 then
  redis.call('HSET', meta, 'partition', partition, 'offset', last, 'count', count,
    'updated_at', last_ms)
  redis.call('HSETNX', meta, 'created_at', first_ms)
  if ARGV[2] ~= '' then redis.call('HSETNX', meta, 'owner', ARGV[2]) end
end
return {applied, skipped}
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


def _event_ms(record: LogRecord) -> str:
    return str(int(record.event.occurred_at.timestamp() * 1000))


class RedisProjection:
    """Applies log records to the read model of one namespace.

    Raises :class:`redis.exceptions.ConnectionError` and
    :class:`redis.exceptions.TimeoutError` unchanged from :meth:`apply`, so the
    caller can retry the whole batch (it is idempotent); any other Redis
    failure becomes :class:`ReadModelError`.
    """

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        self._sha = hashlib.sha1(_APPLY.encode()).hexdigest()

    def apply(self, records: Sequence[LogRecord]) -> ApplyResult:
        """Apply ``records`` (in log order) idempotently; one Redis round trip.

        Records whose content cannot be applied are returned in
        ``ApplyResult.failed`` with the reason, for the dead-letter topic; the
        others are applied.
        """
        result = ApplyResult()
        sessions: dict[str, list[tuple[LogRecord, list[str]]]] = {}
        for record in records:
            try:
                args = self._arguments(record)
            except ChatLogError as exc:
                result.failed.append((record, str(exc)))
                continue
            sessions.setdefault(record.event.session_id, []).append((record, args))
        if not sessions:
            return result
        replies = self._execute(sessions)
        for (session_id, items), reply in zip(sessions.items(), replies):
            if isinstance(reply, Exception):
                reason = f"session {session_id!r} not applied: {reply}"
                result.failed.extend((record, reason) for record, _ in items)
                continue
            applied, skipped = int(reply[0]), int(reply[1])
            result.applied += applied
            result.skipped += skipped
            # Offsets only grow within a session, so the applied events are the newest.
            for record, _ in items[len(items) - applied :]:
                name = record.event.event_type
                result.applied_by_type[name] = result.applied_by_type.get(name, 0) + 1
        return result

    def _execute(self, sessions: dict[str, list[tuple[LogRecord, list[str]]]]) -> list[Any]:
        """Run every session's script in one pipeline; return the script replies in order."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for session_id, items in sessions.items():
                # A session's events all come from one partition unless the topic
                # was repartitioned; the script refuses the mismatch.
                partition = items[0][0].partition
                owner = next((r.event.user_id for r, _ in items if r.event.user_id), "")
                argv: list[Any] = [partition, owner]
                for _, args in items:
                    argv.extend(args)
                pipe.evalsha(
                    self._sha, 2, self.keys.messages(session_id), self.keys.meta(session_id), *argv
                )
            for session_id, items in sessions.items():
                for user in {r.event.user_id for r, _ in items if r.event.user_id}:
                    score = int(_event_ms(items[-1][0]))
                    pipe.zadd(self.keys.user_sessions(user), {session_id: score}, gt=True)
            try:
                replies = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except redis.RedisError as exc:
                raise ReadModelError(f"applying a batch to Redis failed: {exc}") from exc
            for reply in replies:
                if isinstance(reply, (redis.ConnectionError, redis.TimeoutError)):
                    raise reply
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                # The server lost its script cache (restart, SCRIPT FLUSH, failover).
                # Re-running the batch is safe: applying is idempotent.
                self._sha = self.client.script_load(_APPLY)
                continue
            for reply in replies[len(sessions) :]:
                if isinstance(reply, Exception):
                    raise ReadModelError(f"updating a user's session index failed: {reply}")
            return replies[: len(sessions)]
        raise ReadModelError("the Redis script cache keeps losing the projection script")

    @staticmethod
    def _arguments(record: LogRecord) -> list[str]:
        payload = record.event.payload
        if isinstance(payload, MessageAppended):
            return [str(record.offset), "A", stored_message(payload), _event_ms(record)]
        if isinstance(payload, SessionCleared):
            return [str(record.offset), "C", "", _event_ms(record)]
        raise ReadModelError(f"no projection for event type {record.event.event_type}")


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
