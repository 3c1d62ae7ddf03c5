"""Read-your-writes: the positions a process wrote, and the wait until they are projected.

A writer remembers the newest log position it wrote per key
(:class:`WrittenPositions`); a read through it repeats until the read model's
tracking position covers that write (:func:`wait_until_applied`, and the async
twin :func:`await_until_applied`): every :data:`WAIT_MIN_S` for the first
:data:`WAIT_STEADY_S`, then backing off to :data:`WAIT_MAX_S`, and raises
:class:`~chatlog.errors.ProjectionLagError` (:func:`projection_lag`) when the
timeout passes first. The chat history, the :class:`~chatlog.ChatLog` store
and the checkpoint saver all read this way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from chatlog.errors import ChatLogError, ProjectionLagError, ReadModelRepairingError
from chatlog.producers.records import LogPosition

#: Poll interval bounds while a read waits for its own writes to be projected.
WAIT_MIN_S = 0.001
WAIT_MAX_S = 0.02
#: How long a read polls every WAIT_MIN_S before it backs off. With wake-ups
#: (CHATLOG_WAKEUP) a write is usually applied within a few milliseconds; a
#: doubling backoff from the start read at 0.5, 1.5, 3.5, 7.5, 15.5 ms, so a
#: write applied at 4 ms was read at 7.5.
WAIT_STEADY_S = 0.02


def _delays() -> Iterator[float]:
    """The sleeps between a waiting read's attempts."""
    slept = 0.0
    while slept < WAIT_STEADY_S:
        slept += WAIT_MIN_S
        yield WAIT_MIN_S
    delay = WAIT_MIN_S
    while True:
        delay = min(delay * 2, WAIT_MAX_S)
        yield delay


class Applied(Protocol):
    """A read's tracking position: the last applied event (``-1``/``None``: nothing yet)."""

    @property
    def partition(self) -> int | None:
        """Partition of the last applied event."""

    @property
    def offset(self) -> int:
        """Offset of the last applied event."""


#: What a read returns; unbounded, since an index read (a user's threads) carries
#: several threads' positions rather than one.
A = TypeVar("A")


class WrittenPositions:
    """The newest log position this process wrote per key (session or thread).

    Shared by every history a :class:`~chatlog.ChatLog` hands out, so that a
    fresh history object for the same session (``RunnableWithMessageHistory``
    makes one per call) still sees the writes of the previous one. Bounded:
    the least recently written keys are forgotten first.
    """

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.max_sessions = max_sessions
        self._positions: OrderedDict[str, LogPosition] = OrderedDict()
        self._written_at: dict[str, float] = {}
        # Whose session each write was, so a listing of a user's sessions can
        # wait for exactly the writes that can show up in it.
        self._owner: dict[str, str] = {}
        self._by_user: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def record(
        self, session_id: str, positions: Sequence[LogPosition], *, user_id: str | None = None
    ) -> None:
        """Remember the newest of ``positions`` for ``session_id``, written as ``user_id``."""
        if not positions:
            return
        newest = max(positions, key=lambda p: p.offset)
        with self._lock:
            current = self._positions.get(session_id)
            if current is None or newest.partition != current.partition or (
                newest.offset > current.offset
            ):
                self._positions[session_id] = newest
            self._positions.move_to_end(session_id)
            self._written_at[session_id] = time.monotonic()
            if user_id is not None and self._owner.get(session_id) != user_id:
                self._forget_owner(session_id)
                self._owner[session_id] = user_id
                self._by_user.setdefault(user_id, set()).add(session_id)
            while len(self._positions) > self.max_sessions:
                forgotten, _ = self._positions.popitem(last=False)
                self._written_at.pop(forgotten, None)
                self._forget_owner(forgotten)

    def _forget_owner(self, session_id: str) -> None:
        owner = self._owner.pop(session_id, None)
        if owner is not None:
            listed = self._by_user[owner]
            listed.discard(session_id)
            if not listed:
                del self._by_user[owner]

    def sessions_of(self, user_id: str) -> list[str]:
        """The sessions this process wrote as ``user_id`` and still remembers, sorted."""
        with self._lock:
            return sorted(self._by_user.get(user_id, ()))

    def get(self, session_id: str) -> LogPosition | None:
        """The newest position written for ``session_id`` by this process, if any."""
        return self._positions.get(session_id)

    def seconds_since_written(self, session_id: str) -> float | None:
        """Seconds since this process last wrote ``session_id`` (monotonic), if it did."""
        written_at = self._written_at.get(session_id)
        return None if written_at is None else time.monotonic() - written_at

    def sessions(self) -> list[str]:
        """Every key with a remembered position, least recently written first."""
        with self._lock:
            return list(self._positions)

    def settled(self, session_id: str, applied: Applied, *, session_ttl_s: float | None) -> bool:
        """Whether a read that found ``applied`` may be served for ``session_id``.

        It may when the read covers this process's newest write, or when the
        session is gone from the read model altogether after its idle TTL
        passed since that write (the TTL may have removed what was written).
        """
        if self.covered(session_id, applied):
            return True
        since = self.seconds_since_written(session_id)
        return (
            applied.partition is None
            and session_ttl_s is not None
            and since is not None
            and since > session_ttl_s
        )

    def covered(self, session_id: str, applied: Applied) -> bool:
        """Whether ``applied`` includes this process's newest write of ``session_id``.

        Offsets compare only within one partition, so an applied position on
        another partition covers nothing.
        """
        written = self._positions.get(session_id)
        return written is None or (
            applied.partition == written.partition and applied.offset >= written.offset
        )


def projection_lag(
    subject: str,
    written: LogPosition,
    applied: Applied,
    *,
    read_model: str,
    writer: str,
    timeout_s: float,
    hint: str,
    topic: str | None = None,
) -> ProjectionLagError:
    """The error for a read that waited ``timeout_s`` and still misses ``written``.

    Args:
        subject: What was read, e.g. ``"session 'abc'"``.
        written: The newest position the writer wrote.
        applied: The read model's tracking position at the last read.
        read_model: Which read model, e.g. ``"read model"``.
        writer: Whose writes, e.g. ``"history"``.
        timeout_s: How long the read waited.
        hint: What to check.
        topic: The topic written to, named when it is not the chat topic.
    """
    lag = written.offset - applied.offset
    where = f" of {topic!r}" if topic is not None else ""
    return ProjectionLagError(
        f"{subject}: the {read_model} is {lag} event(s) behind this {writer}'s own writes "
        f"on partition {written.partition}{where} (applied offset {applied.offset}, written "
        f"{written.offset}) after {timeout_s:g}s; {hint}",
        lag=lag,
        partition=written.partition,
    )


def repairing_error(subject: str, why: str, timeout_s: float) -> ReadModelRepairingError:
    """The error for a read that waited ``timeout_s`` for a repair of what it reads."""
    return ReadModelRepairingError(
        f"{subject}: {why}, still after {timeout_s:g}s; the projector rebuilds it from "
        "the log: retry later, check that a projector is running, or raise "
        "CHATLOG_READ_TIMEOUT"
    )


def wait_until_applied(
    read: Callable[[], A],
    caught_up: Callable[[A], bool],
    lag_error: Callable[[A], ChatLogError],
    timeout_s: float,
) -> A:
    """Repeat ``read`` until ``caught_up`` accepts its answer; return that answer.

    Raises:
        ProjectionLagError: ``lag_error`` of the last answer, once ``timeout_s`` passed
            (or :class:`~chatlog.errors.ReadModelRepairingError`, when that is what
            ``lag_error`` makes of an answer the read model is still repairing).
    """
    deadline = time.monotonic() + timeout_s
    delays = _delays()
    while True:
        state = read()
        if caught_up(state):
            return state
        if time.monotonic() >= deadline:
            raise lag_error(state)
        time.sleep(next(delays))


async def await_until_applied(
    read: Callable[[], Awaitable[A]],
    caught_up: Callable[[A], bool],
    lag_error: Callable[[A], ChatLogError],
    timeout_s: float,
) -> A:
    """Async :func:`wait_until_applied`: sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    delays = _delays()
    while True:
        state = await read()
        if caught_up(state):
            return state
        if time.monotonic() >= deadline:
            raise lag_error(state)
        await asyncio.sleep(next(delays))
