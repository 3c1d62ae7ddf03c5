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
:class:`~chatlog.keys.ReadModelKeys`. On a standalone Redis one call covers
many sessions and their owners' index keys; on a Redis Cluster the same script
runs once per slot group with its keys declared, and the user index and
positions follow in separate steps (:mod:`chatlog.projector.cluster_projection`).

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
  is expired on the spot, so replays never bring expired sessions back.
* ``UserDeleted`` removes the user's index entries not newer than the event.
* Message ids: an append of an id the session holds (its ``:ids`` set) is a
  duplicate verdict (``ApplyResult.deduplicated``), neither applied nor
  dead-lettered; clear, deletion and expiry forget the ids.
* ``MessagesAppended``: all of its messages or none, at its expected version;
  the verdict goes to the session's ``:verdicts`` hash for the writer
  (``ApplyResult.conflicts`` counts refusals).
* An idle-expired session is marked ``expired`` rather than deleted: its
  meta keeps the position 7 days (redelivery is skipped) and a later record
  inside its window continues it, judged by event time like verify's fold.
* A shredded event (``OP_SHREDDED``: sealed under a destroyed data key) only
  moves its session's offset, so read-your-writes waits end; a session the
  namespace never held gets a deletion tombstone for it, not an empty session.
  Neither applied nor dead-lettered.
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
from chatlog.projector.changes import Change, Refusal, RefusalReason, change_of
from chatlog.projector.cluster_projection import ClusterApply, ClusterPending
from chatlog.projector.protocol import (
    EVENT_TYPES,
    NOTE_CONFLICT,
    NOTE_DUPLICATE,
    NOTE_HOLE,
    NOTE_LOST,
    NOTE_OWNER,
    NOTE_PARTITION,
    NOTE_REJECTED,
    NOTE_SKIPPED,
    OP_DELETE_USER,
    OP_SHREDDED,
    script_source,
)
from chatlog.projector.raw_pipeline import Command, PendingScripts, ScriptBatch
from chatlog.redis_clients import is_cluster
from chatlog.schemas.events import ChatEvent

#: Sessions per script call: a script runs alone, so a call must not keep
#: readers waiting long (64 one-message sessions take Redis well under a
#: millisecond), and must be big enough that the per-call cost is small.
SESSIONS_PER_CALL = 64

# The script and its argument layout: chatlog.projector.protocol.
_APPLY = script_source("redis_projection")

_OP = itemgetter(5)  # Change.op, read at C speed
# The reply's note codes as Redis returns them.
_NOTE_SKIPPED, _NOTE_OWNER, _NOTE_REJECTED, _NOTE_PARTITION = (
    code.encode() for code in (NOTE_SKIPPED, NOTE_OWNER, NOTE_REJECTED, NOTE_PARTITION)
)
_NOTE_DUPLICATE, _NOTE_CONFLICT = NOTE_DUPLICATE.encode(), NOTE_CONFLICT.encode()
_NOTE_LOST, _NOTE_HOLE = NOTE_LOST.encode(), NOTE_HOLE.encode()


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
    #: Records that were not applied, with the refusal (the worker dead-letters them).
    failed: list[tuple[Change | LogRecord, Refusal]] = field(default_factory=list)
    applied_by_type: dict[str, int] = field(default_factory=dict)
    skipped_by_type: dict[str, int] = field(default_factory=dict)
    #: The changes applied to the read model (for end-to-end latency metrics).
    applied_records: list[Change] = field(default_factory=list)
    #: Appends whose message ids the session already held: verdicts, not dead letters.
    deduplicated: int = 0
    #: Conditional appends refused by their expected version: verdicts, not dead letters.
    conflicts: int = 0
    #: Loss detection (live projection only): the namespace lost its generation key
    #: (or, on a Redis Cluster, the slots in :attr:`lost_slots`), so some of the
    #: batch was not applied; repair the namespace, then send it again.
    namespace_lost: bool = False
    #: Redis Cluster: the hash slots whose markers were missing (their primary lost
    #: its data); empty when the generation itself was missing.
    lost_slots: list[int] = field(default_factory=list)
    #: Sessions whose meta and list disagree (a key was lost): none of their
    #: changes were applied; rebuild them, then send the batch again.
    holes: list[str] = field(default_factory=list)


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
        pending: PendingScripts | ClusterPending | None,
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
        pending = self._pending
        replies = pending.replies()
        self._pending = None
        notes: list[tuple[int, bytes, Any]] = []
        for call, reply in enumerate(replies):
            if isinstance(reply, Exception):
                raise ReadModelError(f"applying a batch to Redis failed: {reply}")
            if len(reply) == 5 and reply[3] == _NOTE_LOST:
                result.namespace_lost = True
                if isinstance(pending, ClusterPending):
                    result.lost_slots = pending.lost_slots
                continue
            result.applied += reply[0]
            result.skipped += reply[1]
            base = call * SESSIONS_PER_CALL - 1
            notes += [
                (base + reply[k], reply[k + 1], reply[k + 2]) for k in range(2, len(reply), 3)
            ]
        if result.namespace_lost:
            # What the other calls applied is applied again (and skipped) after the repair.
            result.applied_records = []
        elif not notes:
            # The common case: every change applied.
            result.applied_records = self._changes
        else:
            result.applied_records = self._sort_out(notes)
        counts = Counter(map(_OP, result.applied_records))
        if OP_SHREDDED in counts:
            # Shredded events only moved their sessions' positions: not applied.
            del counts[OP_SHREDDED]
            result.applied_records = [c for c in result.applied_records if c.op != OP_SHREDDED]
        result.applied += counts.get(OP_DELETE_USER, 0)
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
            if code == _NOTE_SKIPPED:
                for change in changes[:value]:  # offsets only grow: the skipped are the oldest
                    left_out.add((session_id, change.offset))
                    name = change.event_type
                    result.skipped_by_type[name] = result.skipped_by_type.get(name, 0) + 1
            elif code in (_NOTE_DUPLICATE, _NOTE_CONFLICT):
                left_out.add((session_id, int(value)))
                if code == _NOTE_DUPLICATE:
                    result.deduplicated += 1
                else:
                    result.conflicts += 1
            elif code == _NOTE_OWNER:
                owners[session_id] = _text(value)
            elif code == _NOTE_HOLE:
                result.holes.append(session_id)
                left_out.update((session_id, change.offset) for change in changes)
            elif code == _NOTE_REJECTED:
                change = next(c for c in changes if c.offset == value)
                left_out.add((session_id, change.offset))
                result.failed.append((change, _ownership_reason(change, owners[session_id])))
            else:
                if code == _NOTE_PARTITION:
                    why = f"the session is tracked on partition {_text(value)}, the event " \
                        f"comes from partition {changes[0].partition} (PARTITION)"
                    kind = RefusalReason.PARTITION
                else:
                    why = _text(value)
                    kind = RefusalReason.SESSION_FAILED
                reason = Refusal(kind, f"session {session_id!r} not applied: {why}")
                for change in changes:
                    left_out.add((session_id, change.offset))
                    if change.op != OP_SHREDDED:  # erased: never dead-lettered
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
        self,
        client: redis.Redis,
        namespace: str,
        *,
        session_ttl_s: float | None = None,
        detect_loss: bool = False,
    ) -> None:
        self.client = client
        self.keys = ReadModelKeys(namespace)
        #: Loss detection (the live projector's): check the namespace's generation
        #: key and each session's meta against its list (see ApplyResult.namespace_lost).
        self.detect_loss = detect_loss
        #: The deployment's idle TTL in milliseconds (0: sessions never expire).
        self.session_ttl_ms = int(session_ttl_s * 1000) if session_ttl_s else 0
        self._script = ScriptBatch(client, _APPLY, "applying a batch to Redis")
        # The key layout stays in ReadModelKeys: the script gets each key
        # kind as the text around an id and puts the id in between.
        self._templates: list[str] = []
        for key in (self.keys.messages, self.keys.meta, self.keys.user_sessions):
            prefix, suffix = key("\x00").split("\x00")
            self._templates += [prefix, suffix]
        self._id_templates: list[str] = []
        for key in (self.keys.message_ids, self.keys.verdicts):
            prefix, suffix = key("\x00").split("\x00")
            self._id_templates += [prefix, suffix]
        # On a Redis Cluster: one call per slot group, each checking its slot's
        # marker instead of the generation (in another slot; see cluster_projection).
        self._cluster = (
            ClusterApply(
                client, _APPLY, self.keys, per_call=SESSIONS_PER_CALL, detect_loss=detect_loss
            )
            if is_cluster(client) else None
        )

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
                    refusal = Refusal(RefusalReason.UNPROJECTABLE, str(exc))
                    result.failed.append((record, refusal))
                    continue
            change: Change = record
            op = change.op
            if op == OP_DELETE_USER:
                if not change.user_id:
                    refusal = Refusal(RefusalReason.UNPROJECTABLE, "UserDeleted without a user id")
                    result.failed.append((change, refusal))
                    continue
                users += (change.user_id, change.event_ms)
            else:
                args = sessions.get(change.session_id)
                if args is None:
                    sessions[change.session_id] = [
                        change.session_id, change.partition, 1,
                        change.offset, op, change.arg, change.event_ms, change.user_id, change.key,
                    ]
                else:
                    args[2] += 1
                    args += (
                        change.offset, op, change.arg, change.event_ms, change.user_id, change.key
                    )
            changes.append(change)
        if self._cluster is not None:
            if not (sessions or users or advance):
                return PendingApply(result, changes, [], None)
            head = (self.session_ttl_ms, int(time.time() * 1000))
            grouped = self._cluster.pending(list(sessions.values()), users, advance or {}, head)
            return PendingApply(result, changes, grouped.order, grouped)
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
        """The batch's script calls; the last one also deletes users and advances positions.

        Each call's ARGV is laid out as :mod:`~chatlog.projector.protocol` says:
        the key templates (``ARG_MESSAGES_PREFIX`` ..), ``ARG_DEFAULT_TTL``,
        ``ARG_NOW``, ``ARG_POSITIONS_KEY``, ``ARG_POSITION_COUNT``, the
        message-id and verdict key templates (``ARG_IDS_PREFIX`` ..), the
        slot mode (``ARG_SLOT_MODE``, empty off a cluster), the position pairs,
        the user deletions, then the sessions.
        """
        keys = (1, self.keys.generation()) if self.detect_loss else (0,)
        head = ("EVALSHA", sha, *keys, *self._templates, self.session_ttl_ms, now_ms)
        calls = range(0, max(len(sessions), 1), SESSIONS_PER_CALL)
        last = calls[-1]
        for start in calls:
            argv: list[Any] = []
            for args in sessions[start : start + SESSIONS_PER_CALL]:
                argv += args
            if start != last:
                yield (*head, "", 0, *self._id_templates, "", 0, *argv)
                continue
            pairs: list[int] = []
            for partition, offset in advance.items():
                pairs += (partition, offset)
            yield (
                *head, self.keys.positions(), len(advance), *self._id_templates, "", *pairs,
                len(users) // 2, *users, *argv,
            )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ownership_reason(change: Change, owner: str) -> Refusal:
    writer = change.user_id
    who = f"user {writer!r}" if writer else "a writer without a user id"
    return Refusal(
        RefusalReason.OWNERSHIP,
        f"ownership: session {change.session_id!r} belongs to user {owner!r}; "
        f"{who} may not change it (SessionOwnershipError)",
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
