"""Verify: what the read model should hold according to the log, and how it differs.

:class:`ExpectedState` folds log records into each session's expected message
list in plain Python, from the same :class:`~chatlog.projector.changes.Change`
records the projection gets. It is deliberately written apart from the Lua apply
step in :mod:`chatlog.projector.redis_projection`: an oracle that shared the
code it checks would agree with every bug in it. It follows the same
documented rules: ownership (an event from another writer than the owner is
rejected), ``SessionCleared``, ``SessionDeleted`` (a later write starts
afresh), ``SessionTtlSet`` and idle expiry judged by event time, appends by
message id (an id the session holds is a duplicate; clear, deletion and expiry
forget the ids), conditional appends (``MessagesAppended``: all or none, at
the expected version) and shredded events (an erased subject's: they change
nothing but the session's position).
:func:`compare` classifies how a stored list differs from the expected one.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chatlog.errors import ChatLogError
from chatlog.projector.changes import Change, change_of, conditional_fields
from chatlog.projector.protocol import (
    OP_APPEND,
    OP_APPEND_IF,
    OP_CLEAR,
    OP_DELETE_SESSION,
    OP_DELETE_USER,
    OP_SET_TTL,
    OP_SHREDDED,
)
from chatlog.projector.redis_projection import LogRecord


@dataclass(slots=True)
class ExpectedSession:
    """One session as the log says the read model should hold it."""

    partition: int
    offset: int = -1
    owner: str = ""
    messages: list[str] = field(default_factory=list)
    ttl_ms: int | None = None
    last_event_ms: int = 0
    #: The ids of the messages it holds (appends of these are duplicates).
    ids: set[str] = field(default_factory=set)

    def expired(self, default_ttl_ms: int, at_ms: int) -> bool:
        """Whether the session's idle TTL ran out by ``at_ms`` (judged by event time)."""
        ttl = default_ttl_ms if self.ttl_ms is None else self.ttl_ms
        return self.offset >= 0 and ttl > 0 and self.last_event_ms + ttl <= at_ms


class ExpectedState:
    """The expected read model of every session, folded from log records in log order.

    Args:
        session_ttl_s: The deployment's idle TTL (``Settings.session_ttl_s``).
    """

    def __init__(self, *, session_ttl_s: float | None = None) -> None:
        self.sessions: dict[str, ExpectedSession] = {}
        self.default_ttl_ms = int(session_ttl_s * 1000) if session_ttl_s else 0
        self.events = 0
        #: Appends dropped as duplicates and conditional appends refused (verdicts).
        self.deduplicated = 0
        self.conflicts = 0
        #: Each user's session index: session id -> last activity (event ms).
        self.index: dict[str, dict[str, int]] = {}

    def add(self, record: Change | LogRecord) -> None:
        """Fold one record (records of one session must come in log order)."""
        self.events += 1
        if isinstance(record, LogRecord):
            try:
                record = change_of(*record)
            except ChatLogError:
                return  # the projector dead-letters it: it never reaches the read model
        op = record.op
        if op == OP_DELETE_USER:
            # The user's index entries not newer than the deletion go.
            listed = self.index.get(record.user_id, {})
            for session_id in [s for s, at in listed.items() if at <= record.event_ms]:
                del listed[session_id]
            return
        session = self.sessions.get(record.session_id)
        if op == OP_SHREDDED:
            # An erased subject's event: whoever wrote it, it only moves the
            # position (of a session held nowhere yet: an empty, ownerless one).
            if session is None:
                session = self.sessions[record.session_id] = ExpectedSession(record.partition)
            session.offset = record.offset
            return
        if session is None or session.expired(self.default_ttl_ms, record.event_ms):
            # New, or idle-expired before this event: its keys are gone, it starts afresh.
            if session is not None:
                self._unlist(record.session_id, session.owner)
            session = self.sessions[record.session_id] = ExpectedSession(record.partition)
        user = record.user_id
        if session.owner and user != session.owner:
            return  # rejected by ownership; the projector dead-letters it
        if self._verdict(session, record):
            session.offset = record.offset
            return
        session.offset = record.offset
        session.last_event_ms = max(session.last_event_ms, record.event_ms)
        if op == OP_DELETE_SESSION:
            self._unlist(record.session_id, session.owner)
            session.messages, session.owner, session.ttl_ms = [], "", None
            session.ids = set()
            return
        if not session.owner:
            session.owner = user
        if op == OP_APPEND:
            session.messages.append(record.arg.decode("utf-8"))
            if record.key:
                session.ids.add(record.key)
        elif op == OP_APPEND_IF:
            for key, message in conditional_fields(record.arg)[1]:
                if not key or key not in session.ids:
                    session.messages.append(message.decode("utf-8"))
                    if key:
                        session.ids.add(key)
        elif op == OP_CLEAR:
            session.messages = []
            session.ids = set()
        elif op == OP_SET_TTL:
            session.ttl_ms = int(record.arg) if record.arg else None
        if session.owner:
            self.index.setdefault(session.owner, {})[record.session_id] = session.last_event_ms

    def _verdict(self, session: ExpectedSession, record: Change) -> bool:
        """Whether ``record`` is a duplicate or a refused conditional append (changes nothing)."""
        if record.op == OP_APPEND:
            if record.key and record.key in session.ids:
                self.deduplicated += 1
                return True
        elif record.op == OP_APPEND_IF:
            expected, pairs = conditional_fields(record.arg)
            if pairs and all(key and key in session.ids for key, _ in pairs):
                self.deduplicated += 1
                return True
            if expected != len(session.messages):
                self.conflicts += 1
                return True
        return False

    def _unlist(self, session_id: str, owner: str) -> None:
        if owner:
            self.index.get(owner, {}).pop(session_id, None)

    def user_sessions(self, user_id: str, *, now_ms: int | None = None) -> dict[str, int]:
        """The session index a reader should see for ``user_id`` now: session -> last activity."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return {
            session_id: at
            for session_id, at in self.index.get(user_id, {}).items()
            if not self.sessions[session_id].expired(self.default_ttl_ms, now)
        }

    def messages(self, session_id: str, *, now_ms: int | None = None) -> list[str]:
        """The stored messages a reader should see for ``session_id`` now."""
        session = self.sessions.get(session_id)
        if session is None:
            return []
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return [] if session.expired(self.default_ttl_ms, now) else session.messages


@dataclass(frozen=True, slots=True)
class SessionDifference:
    """How one session's stored messages differ from the log's.

    ``missing`` counts messages the log has and the read model lacks,
    ``extra`` the reverse, ``altered`` messages changed in place, and
    ``reordered`` says the messages both hold are in another order.
    """

    session_id: str
    expected_count: int
    actual_count: int
    missing: int
    extra: int
    altered: int
    reordered: bool

    @property
    def kinds(self) -> list[str]:
        """The names of the differences found (``missing``, ``extra``, ...)."""
        kinds = [k for k in ("missing", "extra", "altered") if getattr(self, k)]
        return [*kinds, "reordered"] if self.reordered else kinds

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "session_id": self.session_id,
            "kinds": self.kinds,
            "expected_count": self.expected_count,
            "actual_count": self.actual_count,
            "missing": self.missing,
            "extra": self.extra,
            "altered": self.altered,
            "reordered": self.reordered,
        }


def compare(session_id: str, expected: list[str], actual: list[str]) -> SessionDifference | None:
    """Classify how ``actual`` differs from ``expected``; ``None`` when they are equal."""
    if expected == actual:
        return None
    missing = Counter(expected) - Counter(actual)
    extra = Counter(actual) - Counter(expected)
    # A message replaced in place shows up as one missing and one extra at the
    # same position; counted once, as altered.
    altered = 0
    for want, got in zip(expected, actual):  # noqa: B905 - lengths differ when messages are missing
        if want != got and missing[want] > 0 and extra[got] > 0:
            missing[want] -= 1
            extra[got] -= 1
            altered += 1
    common = Counter(expected) & Counter(actual)
    return SessionDifference(
        session_id=session_id,
        expected_count=len(expected),
        actual_count=len(actual),
        missing=sum(missing.values()),
        extra=sum(extra.values()),
        altered=altered,
        reordered=_common_order(expected, common) != _common_order(actual, common),
    )


def _common_order(messages: list[str], common: Counter[str]) -> list[str]:
    budget = Counter(common)
    kept = []
    for message in messages:
        if budget[message] > 0:
            budget[message] -= 1
            kept.append(message)
    return kept
