"""Verify a namespace: fold the log apart and report every session the read model gets wrong.

The fold and the comparison are :mod:`chatlog.projector.verify`'s (written
apart from the Lua apply step on purpose); this module runs them against a
live namespace: it folds the log up to the namespace's applied positions,
reads every session's stored list, and gives a moving read model a moment
to settle before calling a session different.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatlog.keys import META_EXPIRED, ReadModelKeys
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.replay_log import ReplayLog
from chatlog.projector.replay_progress import ProgressCallback, ReplayProgress
from chatlog.projector.replay_target import ReplayTarget
from chatlog.projector.session_rebuild import SessionReplay
from chatlog.projector.verify import ExpectedState, SessionDifference, compare

#: How long verify waits for a moving read model to settle before reporting.
SETTLE_S = 5.0


@dataclass(slots=True)
class VerifyReport:
    """What :meth:`Replayer.verify` found: every session whose read model differs.

    With ``repair``, ``repaired`` holds the one-session rebuild of each
    session in ``differences`` and ``remaining`` those that still differ after it.
    """

    namespace: str
    sessions_checked: int
    differences: list[SessionDifference]
    progress: ReplayProgress
    repaired: list[SessionReplay] = field(default_factory=list)
    remaining: list[SessionDifference] = field(default_factory=list)
    #: LangGraph threads checked (a target holding the saver's read model), and those
    #: whose stored state differs from the checkpoint log (no repair: rebuild the target).
    threads_checked: int = 0
    thread_differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the read model matched the log (before any repair)."""
        return not self.differences and not self.thread_differences

    @property
    def healthy(self) -> bool:
        """Whether the read model matches the log now: it did, or every difference was repaired."""
        if self.thread_differences:
            return False
        return not self.differences or (
            len(self.repaired) == len(self.differences) and not self.remaining
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "namespace": self.namespace,
            "ok": self.ok,
            "sessions_checked": self.sessions_checked,
            "events_read": self.progress.done,
            "differences": [d.as_dict() for d in self.differences],
            "repaired": [r.as_dict() for r in self.repaired],
            "remaining": [d.as_dict() for d in self.remaining],
            "threads_checked": self.threads_checked,
            "thread_differences": self.thread_differences,
            "healthy": self.healthy,
            "seconds": round(self.progress.elapsed_s, 3),
        }


@dataclass(slots=True)
class _Check:
    """One verify run's state: the fold so far and where it reached."""

    keys: ReadModelKeys
    expected: ExpectedState
    reached: dict[int, int]
    progress: ReplayProgress
    on_progress: ProgressCallback | None


class Verifier:
    """Checks namespaces of one replay target against one log.

    Args:
        log: The topic to fold.
        target: The Redis holding the namespaces.
    """

    def __init__(self, log: ReplayLog, target: ReplayTarget) -> None:
        self.log = log
        self.target = target

    def run(
        self,
        namespace: str,
        *,
        on_progress: ProgressCallback | None = None,
        settle_s: float = SETTLE_S,
        repair: Callable[[str], SessionReplay] | None = None,
    ) -> VerifyReport:
        """Verify ``namespace``; see :meth:`chatlog.projector.Replayer.verify`.

        With ``repair``, it is called with each session that differs, and the
        repaired sessions are then checked again against the log up to its end
        (a repair rebuilds a session from its whole partition).
        """
        client = self.target.redis
        keys = ReadModelKeys(namespace)
        positions = AppliedPositions(client, namespace)
        ends = self._ends(positions)
        begins = self.log.beginnings(ends)
        progress = ReplayProgress(namespace=namespace, partitions_total=len(ends))
        expected = ExpectedState(session_ttl_s=self.target.settings.session_ttl_s)
        reached = self._fold(expected, begins, ends, progress, on_progress)
        # Every session with any key (a list without its meta hash too), so a
        # stray list the log knows nothing of is reported as well.
        session_prefix = keys.session_prefix().encode()
        stored = self.target.call(
            lambda: {
                ReadModelKeys.session_of(k.decode())
                for k in client.scan_iter(match=keys.all_pattern(), count=1000)
                if k.startswith(session_prefix) and keys.owns(k)
            }
        )
        sessions = set(expected.sessions) | stored
        check = _Check(keys, expected, reached, progress, on_progress)
        differences = self._settle(check, sessions, lambda: self._ends(positions), settle_s)
        report = VerifyReport(namespace, len(sessions), differences, progress)
        if repair is not None and differences:
            report.repaired = [repair(d.session_id) for d in differences]
            report.remaining = self._settle(
                check, {d.session_id for d in differences}, lambda: self.log.ends(None), settle_s
            )
        progress.positions = check.reached
        progress.finished_at = time.monotonic()
        return report

    def _settle(
        self,
        check: _Check,
        sessions: set[str],
        ends: Callable[[], dict[int, int]],
        settle_s: float,
    ) -> list[SessionDifference]:
        """The sessions of ``sessions`` that still differ once the read model stopped moving.

        Sessions that differ are compared again for up to ``settle_s`` while the
        log is folded further (up to ``ends()``), so a live projector moving
        the read model on is not mistaken for a difference.
        """
        differences = self._differences(check.keys, check.expected, sessions)
        deadline = time.monotonic() + settle_s
        quiet_rounds = 0
        while differences and time.monotonic() < deadline:
            time.sleep(0.2)
            newer = ends()
            if any(newer[p] > check.reached.get(p, 0) for p in newer):
                quiet_rounds = 0
                check.reached = self._fold(
                    check.expected, check.reached, newer, check.progress, check.on_progress
                )
            else:
                # Nothing was applied meanwhile: what still differs really differs.
                quiet_rounds += 1
                if quiet_rounds > 2:
                    break
            differences = self._differences(
                check.keys, check.expected, {d.session_id for d in differences}
            )
        return differences

    def _ends(self, positions: AppliedPositions) -> dict[int, int]:
        """Where to fold the log to: the namespace's applied positions, else the log's end."""
        ends = self.log.ends(None)
        recorded = positions.read()
        if recorded:
            ends = {p: min(end, recorded.get(p, end)) for p, end in ends.items()}
        return ends

    def _fold(
        self,
        expected: ExpectedState,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
    ) -> dict[int, int]:
        reached = dict(starts)
        for records, next_offsets in self.log.read(starts, ends, progress):
            for record in records:
                expected.add(record)
            reached.update(next_offsets)
            if on_progress is not None:
                on_progress(progress)
        return reached

    def _differences(
        self, keys: ReadModelKeys, expected: ExpectedState, sessions: set[str]
    ) -> list[SessionDifference]:
        found: list[SessionDifference] = []
        ordered = sorted(sessions)
        now_ms = int(time.time() * 1000)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            pipe = self.target.redis.pipeline(transaction=False)
            for session_id in chunk:
                pipe.lrange(keys.messages(session_id), 0, -1)
                pipe.hexists(keys.meta(session_id), META_EXPIRED)
            replies = self.target.call(pipe.execute)
            for session_id, stored, expired in zip(
                chunk, replies[::2], replies[1::2], strict=True
            ):
                # An idle-expired session's messages linger briefly, hidden from readers.
                actual = [] if expired else [m.decode("utf-8") for m in stored]
                difference = compare(
                    session_id, expected.messages(session_id, now_ms=now_ms), actual
                )
                if difference is not None:
                    found.append(difference)
        return found
