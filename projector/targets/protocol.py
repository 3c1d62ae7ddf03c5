"""The read-model target protocol: what every store chatlog projects into must do.

A target is one store holding one read model: Redis (the default), SQL
through SQLAlchemy (SQLite, PostgreSQL) or DynamoDB. The projector, the
target rebuild/verify (:mod:`chatlog.projector.targets.rebuild`) and the
behaviour test suite use only this protocol, so every store gets the same
idempotent apply rules and the same checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from chatlog.projector.changes import Change
from chatlog.projector.checkpoint_projection import CheckpointApplyResult, CheckpointRecord
from chatlog.projector.redis_projection import ApplyResult
from chatlog.projector.targets.checkpoint_fold import ThreadState


@runtime_checkable
class ReadModelTarget(Protocol):
    """One store's read model, written by :meth:`apply` and read back for verify and readers.

    ``url`` names the target without credentials (for reports and logs).
    """

    url: str

    def apply(self, changes: Sequence[Change], *, advance: Mapping[int, int]) -> ApplyResult:
        """Apply ``changes`` (in log order) idempotently and record ``advance`` with them.

        ``advance`` (partition -> next offset) is recorded in the same
        transaction (SQL) or after the sessions' conditional writes (DynamoDB),
        and only ever moves forward. A change already applied is skipped; one
        refused by the rules (ownership, partition, a store limit) comes back in
        ``ApplyResult.failed`` for the dead-letter topic.

        Raises:
            TargetError: the store failed; applying the same changes again is safe.
        """
        ...

    def replace_session(
        self, session_id: str, changes: Sequence[Change], *, through: int
    ) -> bool:
        """Put ``session_id`` rebuilt from ``changes`` in place of what the store holds.

        ``changes`` are every change of the session in its partition, in log
        order, up to offset ``through``; the session is folded from them alone
        (messages, owner, TTL, its user index row) and written as one
        transaction (SQL) or one conditional write (DynamoDB). Positions are
        not touched. Returns ``False``, writing nothing, when the store
        already applied a newer event of the session (read on and call again).

        Raises:
            TargetError: the store failed, or cannot rebuild one session (Redis:
                ``chatlog replay session --namespace``).
        """
        ...

    def positions(self) -> dict[int, int]:
        """Every recorded partition's next offset to apply."""
        ...

    def read_session(self, session_id: str, *, now_ms: int | None = None) -> list[str]:
        """The session's stored messages (JSON text, log order); ``[]`` when expired or absent."""
        ...

    def stored_form(self, text: str) -> str:
        """The form :meth:`read_session` returns a message the log stores as ``text``.

        The text itself for Redis and SQL; a canonical JSON form for stores that
        keep messages as structured values (DynamoDB), which verify compares in.
        """
        ...

    def user_sessions(self, user_id: str, *, now_ms: int | None = None) -> dict[str, int]:
        """The user's sessions that are not expired: session id -> last activity (event ms)."""
        ...

    def scan_sessions(self) -> Iterator[str]:
        """Every session id the target holds state for (tombstones included), for verify."""
        ...

    def sweep(self, *, now_ms: int | None = None) -> int:
        """Delete the stored messages of idle-expired sessions; return how many sessions.

        chatlog's readers already hide expired sessions; this makes LangChain's
        readers (and the disk) agree. Redis expires keys by itself (0).
        """
        ...

    def drop(self) -> None:
        """Delete everything chatlog wrote to the target (its tables or items)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class CheckpointTarget(Protocol):
    """A target that also holds the LangGraph saver's read model (the checkpoint topic).

    The SQL and DynamoDB targets implement it; the Redis worker projects the
    checkpoint topic into Redis itself. Positions are the checkpoint topic's,
    apart from the chat topic's :meth:`ReadModelTarget.positions`.
    """

    def apply_checkpoints(
        self, records: Sequence[CheckpointRecord], *, advance: Mapping[int, int]
    ) -> CheckpointApplyResult:
        """Apply checkpoint records (log order) idempotently and record ``advance`` with them.

        The rules are ``checkpoint_projection.lua``'s
        (:mod:`~chatlog.projector.targets.checkpoint_fold`); a record that
        cannot be applied comes back in ``failed`` for the dead-letter topic.

        Raises:
            TargetError: the store failed; applying the same records again is safe.
        """
        ...

    def checkpoint_positions(self) -> dict[int, int]:
        """The checkpoint topic's next offset to apply, per partition."""
        ...

    def checkpoint_thread_ids(self) -> list[str]:
        """Every thread the target holds a row for, for verify."""
        ...

    def checkpoint_state(self, thread_id: str) -> ThreadState | None:
        """The thread's stored row and items with their values (``None``: no row), for verify."""
        ...
