"""Verify a namespace: fold the log apart and report every session the read model gets wrong.

The fold and the comparison are :mod:`chatlog.projector.verify`'s (written
apart from the Lua apply step on purpose); this module runs them against a
live namespace: it folds the log up to the namespace's applied positions,
reads every session's stored list, and gives a moving read model a moment
to settle before calling a session different.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from chatlog.keys import ReadModelKeys
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.replay_log import ReplayLog
from chatlog.projector.replay_progress import ProgressCallback, ReplayProgress
from chatlog.projector.replay_target import ReplayTarget
from chatlog.projector.verify import ExpectedState, SessionDifference, compare

#: How long verify waits for a moving read model to settle before reporting.
SETTLE_S = 5.0


@dataclass(slots=True)
class VerifyReport:
    """What :meth:`Replayer.verify` found: every session whose read model differs."""

    namespace: str
    sessions_checked: int
    differences: list[SessionDifference]
    progress: ReplayProgress

    @property
    def ok(self) -> bool:
        """Whether the read model matches the log."""
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "namespace": self.namespace,
            "ok": self.ok,
            "sessions_checked": self.sessions_checked,
            "events_read": self.progress.done,
            "differences": [d.as_dict() for d in self.differences],
            "seconds": round(self.progress.elapsed_s, 3),
        }


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
    ) -> VerifyReport:
        """Verify ``namespace``; see :meth:`chatlog.projector.Replayer.verify`."""
        client = self.target.redis
        keys = ReadModelKeys(namespace)
        positions = AppliedPositions(client, namespace)
        ends = self._ends(positions)
        begins = self.log.beginnings(ends)
        progress = ReplayProgress(namespace=namespace, partitions_total=len(ends))
        expected = ExpectedState(session_ttl_s=self.target.settings.session_ttl_s)
        reached = self._fold(expected, begins, ends, progress, on_progress)
        stored = self.target.call(
            lambda: {
                ReadModelKeys.session_of(k.decode())
                for k in client.scan_iter(match=keys.session_pattern(), count=1000)
                if keys.owns(k)
            }
        )
        sessions = set(expected.sessions) | stored
        differences = self._differences(keys, expected, sessions)
        deadline = time.monotonic() + settle_s
        quiet_rounds = 0
        while differences and time.monotonic() < deadline:
            time.sleep(0.2)
            newer = self._ends(positions)
            if any(newer[p] > reached.get(p, 0) for p in newer):
                quiet_rounds = 0
                reached = self._fold(expected, reached, newer, progress, on_progress)
            else:
                # Nothing was applied meanwhile: what still differs really differs.
                quiet_rounds += 1
                if quiet_rounds > 2:
                    break
            differences = self._differences(keys, expected, {d.session_id for d in differences})
        progress.positions = reached
        progress.finished_at = time.monotonic()
        return VerifyReport(namespace, len(sessions), differences, progress)

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
            replies = self.target.call(pipe.execute)
            for session_id, stored in zip(chunk, replies, strict=True):
                actual = [m.decode("utf-8") for m in stored]
                difference = compare(
                    session_id, expected.messages(session_id, now_ms=now_ms), actual
                )
                if difference is not None:
                    found.append(difference)
        return found
