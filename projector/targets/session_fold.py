"""One rule set for every non-Redis target: load the touched sessions, fold, write back.

The SQL and DynamoDB targets do not re-implement the projection rules. For
each batch they load the state of the sessions it touches, fold the changes
with verify's :class:`~chatlog.projector.verify.ExpectedState` (the
independent reference the Redis script is checked against), and write the
outcome back. So ownership, clear, delete tombstones, TTL by event time and
user deletion are the fold's rules by construction; this module adds only
what an apply needs on top of a fold: the per-session offset check that makes
redelivery harmless, the partition check, and verdicts for the worker.

A session's persisted state is every field of
:class:`~chatlog.projector.verify.ExpectedSession` except its messages, as
JSON (:func:`state_json`), so a rule that adds a field to the fold is
persisted without a change here. Messages are stored apart; a loaded session
carries placeholders for them (:data:`KEPT`) unless the store reads them
anyway (DynamoDB's one item), and :meth:`SessionOutcome.appended` tells an
append-only outcome from one that rewrites the list.

Verdicts of conditional appends (``MessagesAppended``), which a writer waits
for (``add_messages(..., expected_version=...)``), go in the same state JSON
under :data:`~chatlog.target_layout.STATE_VERDICTS`: offset -> [verdict,
recorded at], with the values of ``chatlog.keys.VERDICT_*`` that the Redis
script writes to its ``:verdicts`` hash. They are written with the session
(one transaction, one conditional write), so a writer never sees a verdict
without its messages; each lives ``VERDICT_TTL_MS`` after
it was recorded (wall clock, like Redis's hash; ``projector.protocol``), pruned
when the session is written again.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from chatlog.keys import VERDICT_APPLIED, VERDICT_CONFLICT, VERDICT_DUPLICATE
from chatlog.projector.changes import Change, Refusal, RefusalReason
from chatlog.projector.protocol import (
    EVENT_TYPES,
    OP_APPEND,
    OP_APPEND_IF,
    OP_DELETE_USER,
    VERDICT_TTL_MS,
)
from chatlog.projector.redis_projection import (  # the same dead-letter text for every target
    ApplyResult,
    _ownership_reason,
)
from chatlog.projector.verify import ExpectedSession, ExpectedState
from chatlog.target_layout import STATE_VERDICTS

#: A session's stored verdicts: offset (text) -> [verdict, recorded at (epoch ms)].
Verdicts = dict[str, list[Any]]

#: The placeholder of a stored message a target did not load (compared by identity).
KEPT = "\x00kept"

_STATE_FIELDS = tuple(f.name for f in fields(ExpectedSession) if f.name != "messages")


def _default(field: Field[Any]) -> object:
    if field.default_factory is not MISSING:
        return field.default_factory()
    return field.default


# Fields whose value is a set (JSON has none: stored as sorted lists).
_SET_FIELDS = frozenset(
    f.name for f in fields(ExpectedSession)
    if f.name != "messages" and isinstance(_default(f), (set, frozenset))
)


def _jsonable(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"ExpectedSession holds a {type(value).__name__}, which JSON cannot store")


def state_json(session: ExpectedSession, verdicts: Verdicts | None = None) -> str:
    """The session's persisted state (every field but the messages, and its verdicts) as JSON."""
    state: dict[str, object] = {name: getattr(session, name) for name in _STATE_FIELDS}
    if verdicts:
        state[STATE_VERDICTS] = verdicts
    return json.dumps(state, default=_jsonable)


def stored_verdicts(state: str) -> Verdicts:
    """The verdicts kept in :func:`state_json` text (``{}`` when none)."""
    verdicts: Verdicts = json.loads(state).get(STATE_VERDICTS) or {}
    return verdicts


def session_from(state: str, messages: list[str]) -> ExpectedSession:
    """A session loaded from :func:`state_json` text and its messages (or :data:`KEPT`)."""
    loaded = {k: v for k, v in json.loads(state).items() if k in _STATE_FIELDS}
    for name in _SET_FIELDS & set(loaded):
        loaded[name] = set(loaded[name])
    return ExpectedSession(**loaded, messages=messages)


def expires_at(session: ExpectedSession, default_ttl_ms: int) -> int:
    """When the session's idle TTL runs out (event time, epoch ms); 0 for never."""
    ttl = default_ttl_ms if session.ttl_ms is None else session.ttl_ms
    return session.last_event_ms + ttl if session.offset >= 0 and ttl > 0 else 0


@dataclass(slots=True)
class SessionOutcome:
    """One touched session after the fold: its state and how its messages changed."""

    session: ExpectedSession
    #: How many messages the store held before (the placeholders' count).
    loaded_count: int
    #: Whether the fold kept the loaded list object (only appended to it).
    same_list: bool
    #: The verdicts to store with the session (the loaded ones still live, and the batch's).
    verdicts: Verdicts = field(default_factory=dict)

    @property
    def appended(self) -> list[str] | None:
        """The messages to add after the stored ones, or ``None`` when the list is rewritten."""
        messages = self.session.messages
        count = self.loaded_count
        kept = count == 0 or (len(messages) >= count and messages[count - 1] is KEPT)
        if self.same_list and kept:
            return messages[count:]
        return None

    @property
    def messages(self) -> list[str]:
        """The full list when it is rewritten (holds no placeholder)."""
        messages = self.session.messages
        if any(m is KEPT for m in messages):
            raise AssertionError("a rewritten message list still holds placeholders")
        return messages


@dataclass(slots=True)
class BatchOutcome:
    """What a batch does to a target: per-session outcomes, index edits and verdicts."""

    result: ApplyResult
    sessions: dict[str, SessionOutcome] = field(default_factory=dict)
    #: User index rows to write: (user, session) -> last activity.
    listed: dict[tuple[str, str], int] = field(default_factory=dict)
    #: User index rows to delete.
    unlisted: set[tuple[str, str]] = field(default_factory=set)


def fold_batch(
    changes: Sequence[Change],
    loaded: Mapping[str, ExpectedSession],
    index: Mapping[str, Mapping[str, int]],
    *,
    default_ttl_ms: int,
    admit: Callable[[ExpectedSession | None, Change], Refusal | None] | None = None,
    verdicts: Mapping[str, Verdicts] | None = None,
    now_ms: int | None = None,
) -> BatchOutcome:
    """Fold ``changes`` onto the ``loaded`` sessions and user ``index`` with verify's rules.

    Args:
        changes: The batch, in log order.
        loaded: The stored state of every session the batch touches (absent: new).
        index: The stored user index rows that the batch may change: those of
            the touched sessions and every row of each user the batch deletes.
        default_ttl_ms: The deployment's idle TTL (0: never).
        admit: A store's own limit, asked before each change is folded (a
            refusal leaves the session as it was, e.g. DynamoDB's item size).
        verdicts: The stored verdicts of the touched sessions (:func:`stored_verdicts`).
        now_ms: Wall-clock time verdicts are recorded at and pruned by (default: now).
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    state = ExpectedState()
    state.default_ttl_ms = default_ttl_ms
    state.sessions = dict(loaded)
    state.index = {user: dict(rows) for user, rows in index.items()}
    originals = {sid: (s.messages, len(s.messages)) for sid, s in loaded.items()}
    result = ApplyResult()
    applied: list[Change] = []
    #: Changes that only moved a session's offset (duplicates, refused conditional appends).
    decided: list[Change] = []
    recorded: dict[str, Verdicts] = {}
    for change in changes:
        if change.op == OP_DELETE_USER:
            if not change.user_id:
                refusal = Refusal(RefusalReason.UNPROJECTABLE, "UserDeleted without a user id")
                result.failed.append((change, refusal))
                continue
            state.add(change)
            applied.append(change)
            continue
        session = state.sessions.get(change.session_id)
        if session is not None and session.partition != change.partition:
            result.failed.append((change, Refusal(
                RefusalReason.PARTITION,
                f"session {change.session_id!r} not applied: the session is tracked on "
                f"partition {session.partition}, the event comes from partition "
                f"{change.partition} (PARTITION)",
            )))
            continue
        if session is not None and change.offset <= session.offset:
            result.skipped += 1
            name = change.event_type
            result.skipped_by_type[name] = result.skipped_by_type.get(name, 0) + 1
            continue
        limit = None if admit is None else admit(session, change)
        if limit is not None:
            result.failed.append((change, limit))
            continue
        duplicates, conflicts = state.deduplicated, state.conflicts
        state.add(change)
        after = state.sessions[change.session_id]
        if after.offset != change.offset:
            result.failed.append((change, _ownership_reason(change, after.owner)))
            continue
        # The fold's counters tell its verdict, as the Redis script's notes do.
        verdict = VERDICT_APPLIED
        if state.deduplicated > duplicates:
            verdict = VERDICT_DUPLICATE
            result.deduplicated += 1
        elif state.conflicts > conflicts:
            verdict = VERDICT_CONFLICT + str(len(after.messages))
            result.conflicts += 1
        if change.op == OP_APPEND_IF:
            recorded.setdefault(change.session_id, {})[str(change.offset)] = [verdict, now]
        (applied if verdict == VERDICT_APPLIED else decided).append(change)
    outcome = BatchOutcome(result)
    stored = verdicts or {}
    for session_id in {c.session_id for c in (*applied, *decided) if c.op != OP_DELETE_USER}:
        session = state.sessions[session_id]
        original, count = originals.get(session_id, (None, 0))
        kept = {
            offset: entry for offset, entry in stored.get(session_id, {}).items()
            if int(entry[1]) + VERDICT_TTL_MS > now
        }
        outcome.sessions[session_id] = SessionOutcome(
            session, count, same_list=session.messages is original,
            verdicts={**kept, **recorded.get(session_id, {})},
        )
    before = {(u, s): at for u, rows in index.items() for s, at in rows.items()}
    after_rows = {(u, s): at for u, rows in state.index.items() for s, at in rows.items()}
    outcome.unlisted = set(before) - set(after_rows)
    outcome.listed = {k: at for k, at in after_rows.items() if before.get(k) != at}
    result.applied = len(applied)
    result.applied_records = applied
    counts = Counter(c.op for c in applied)
    result.applied_by_type = {EVENT_TYPES[op]: n for op, n in counts.items()}
    return outcome


def is_append(change: Change) -> bool:
    """Whether ``change`` appends a message (the only change that grows a session)."""
    return change.op == OP_APPEND


def loaded_placeholders(count: int) -> list[str]:
    """A loaded session's message list when the store keeps messages apart."""
    return [KEPT] * count
