"""Rebuild and verify a read-model target (SQL, DynamoDB, Redis) from the log.

:class:`TargetReplayer` reads partitions with manual assignment (no consumer
group, so the live projector is never disturbed) and applies each polled
batch through the target's :meth:`~ReadModelTarget.apply`, which records the
batch's positions with its data. A rebuild killed half-way resumes from the
target's positions. Verify folds the log with
:class:`~chatlog.projector.verify.ExpectedState` up to those positions and
compares every session the log or the target knows; with ``repair`` it
rebuilds exactly the sessions that differ (:meth:`TargetReplayer.rebuild_session`,
one session from its partition, put in place with
:meth:`~ReadModelTarget.replace_session`).

Moving readers to another store is configuration (``CHATLOG_READ_MODEL``,
``chatlog projector run --target``), not a pointer switch, so there is no
``--switch`` here: rebuild, verify, then point the deployment at the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chatlog.errors import ReplayError, TopicError
from chatlog.identifiers import validate_session_id
from chatlog.producers.admin import end_offsets, partition_count
from chatlog.producers.log_reader import beginning_offsets, read_range
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal
from chatlog.projector.replay import ProgressCallback, ReplayProgress, VerifyReport
from chatlog.projector.session_rebuild import SessionReplay, partition_for
from chatlog.projector.targets.checkpoint_rebuild import rebuild_checkpoints
from chatlog.projector.targets.checkpoint_verify import verify_checkpoints
from chatlog.projector.targets.protocol import CheckpointTarget, ReadModelTarget
from chatlog.projector.verify import ExpectedState, SessionDifference, compare
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings

#: Rounds of catching up with appends made during a rebuild before it is done.
CATCH_UP_ROUNDS = 5
#: How long verify waits for a moving target to settle before reporting.
SETTLE_S = 5.0


class TargetReplayer:
    """Rebuilds and verifies one read-model target from the log.

    Args:
        settings: Kafka connection, topic and the deployment's idle TTL.
        target: Where to project (:func:`~chatlog.projector.targets.open_target`).
    """

    def __init__(self, settings: Settings, target: ReadModelTarget) -> None:
        self.settings = settings
        self.target = target
        self.reader = ChangeReader(EventCodec(), settings.max_event_bytes)

    def rebuild(self, *, on_progress: ProgressCallback | None = None) -> ReplayProgress:
        """Project the log into the target, resuming from its recorded positions.

        A target that holds the LangGraph saver's read model gets the
        checkpoint topic too (:func:`rebuild_checkpoints`), after the chat topic.

        Raises:
            TopicError: the topic is missing or cannot be read.
            TargetError: the store failed; run the same rebuild again to resume.
        """
        progress = ReplayProgress(namespace=self.target.url)
        ends = self._ends()
        begins = beginning_offsets(self.settings, self.settings.topic, list(ends))
        recorded = self.target.positions()
        progress.resumed = bool(recorded)
        starts = {p: max(begins[p], recorded.get(p, begins[p])) for p in ends}
        reached = self._project(starts, ends, progress, on_progress)
        for _ in range(CATCH_UP_ROUNDS):
            newer = self._ends()
            if all(newer[p] <= reached.get(p, 0) for p in newer):
                break
            reached = self._project(reached, newer, progress, on_progress)
        if isinstance(self.target, CheckpointTarget):
            partitions_total = progress.partitions_total
            rebuild_checkpoints(self.settings, self.target, progress, on_progress)
            progress.partitions_total = partitions_total
            progress.partitions_done = partitions_total
        progress.finished_at = time.monotonic()
        progress.positions = reached
        return progress

    def _project(
        self,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
    ) -> dict[int, int]:
        def apply(records: list[Change], next_offsets: dict[int, int]) -> None:
            result = self.target.apply(records, advance=next_offsets)
            progress.applied += result.applied
            progress.skipped += result.skipped
            progress.failed += len(result.failed)

        return self._each_batch(starts, ends, progress, on_progress, apply)

    def _each_batch(
        self,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
        handle: Callable[[list[Change], dict[int, int]], None],
        *,
        key: bytes | None = None,
    ) -> dict[int, int]:
        """``handle`` each polled batch of ``[starts, ends)``; return where every partition got."""
        reached = dict(starts)
        for records, next_offsets in read_range(
            self.settings, self.settings.topic, starts, ends, progress, self._decode, key=key
        ):
            handle(records, next_offsets)
            reached.update(next_offsets)
            if on_progress is not None:
                on_progress(progress)
        return reached

    def rebuild_session(
        self, session_id: str, *, on_progress: ProgressCallback | None = None
    ) -> SessionReplay:
        """Rebuild one session from its partition alone and put it in place in the target.

        Reads the session's records of its partition to the end, then hands
        them to :meth:`~ReadModelTarget.replace_session`; if the target's
        live projector applied a newer event meanwhile, it reads on and tries
        again. Positions are not touched, and other sessions are not read.

        Raises:
            InvalidSessionIdError: the session id is unusable.
            TopicError: the topic is missing or cannot be read.
            ReplayError: the session kept changing faster than it could be rebuilt.
            TargetError: the store failed (or is Redis: ``replay session --namespace``).
        """
        validate_session_id(session_id)
        count = partition_count(self.settings, self.settings.topic)
        if not count:
            raise TopicError(f"topic {self.settings.topic!r} does not exist")
        partition = partition_for(session_id, count)
        progress = ReplayProgress(namespace=self.target.url, partitions_total=1)
        start = beginning_offsets(self.settings, self.settings.topic, [partition])[partition]
        end = self._ends()[partition]
        changes: list[Change] = []

        def collect(records: list[Change], _next_offsets: dict[int, int]) -> None:
            changes.extend(r for r in records if r.session_id == session_id)

        for _ in range(CATCH_UP_ROUNDS):
            self._each_batch(
                {partition: start}, {partition: end}, progress, on_progress, collect,
                key=session_id.encode("utf-8"),
            )
            if self.target.replace_session(session_id, changes, through=end - 1):
                break
            start, end = end, self._ends()[partition]
        else:
            raise ReplayError(
                f"session {session_id!r} kept changing during {CATCH_UP_ROUNDS} attempts "
                "to rebuild it; try again"
            )
        progress.applied = len(changes)
        progress.partitions_done = 1
        progress.finished_at = time.monotonic()
        messages = len(self.target.read_session(session_id))
        return SessionReplay(session_id, self.target.url, partition, len(changes), messages,
                             progress)

    def verify(
        self,
        *,
        on_progress: ProgressCallback | None = None,
        settle_s: float = SETTLE_S,
        repair: bool = False,
    ) -> VerifyReport:
        """Recompute every session from the log and report each one the target gets wrong.

        A target that holds the LangGraph saver's read model also has its
        threads checked against the checkpoint log folded to its checkpoint
        positions (``threads_checked``, ``thread_differences``; not repaired).

        With ``repair``, exactly the sessions that differ are rebuilt with
        :meth:`rebuild_session` and checked again against the log folded to
        its end: ``repaired`` lists what was rebuilt, ``remaining`` what still
        differs (the report's ``healthy``).
        """
        progress = ReplayProgress(namespace=self.target.url)
        ends = self._verify_ends()
        begins = beginning_offsets(self.settings, self.settings.topic, list(ends))
        expected = ExpectedState(session_ttl_s=self.settings.session_ttl_s)
        reached = self._fold(expected, begins, ends, progress, on_progress)
        sessions = set(expected.sessions) | set(self.target.scan_sessions())
        differences = self._differences(expected, sessions)
        deadline = time.monotonic() + settle_s
        quiet_rounds = 0
        while differences and time.monotonic() < deadline:
            time.sleep(0.2)
            newer = self._verify_ends()
            if any(newer[p] > reached.get(p, 0) for p in newer):
                quiet_rounds = 0
                reached = self._fold(expected, reached, newer, progress, on_progress)
            else:
                quiet_rounds += 1
                if quiet_rounds > 2:
                    break
            differences = self._differences(expected, {d.session_id for d in differences})
        report = VerifyReport(self.target.url, len(sessions), differences, progress)
        if isinstance(self.target, CheckpointTarget):
            report.threads_checked, report.thread_differences = verify_checkpoints(
                self.settings, self.target, ReplayProgress(namespace=self.target.url)
            )
        if repair and differences:
            report.repaired = [self.rebuild_session(d.session_id) for d in differences]
            # The rebuilt sessions hold the log to its end, ahead of the positions maybe.
            reached = self._fold(expected, reached, self._ends(), progress, on_progress)
            report.remaining = self._differences(expected, {d.session_id for d in differences})
        progress.positions = reached
        progress.finished_at = time.monotonic()
        return report

    def _fold(
        self,
        expected: ExpectedState,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
    ) -> dict[int, int]:
        def fold(records: list[Change], _next_offsets: dict[int, int]) -> None:
            for record in records:
                expected.add(record)

        return self._each_batch(starts, ends, progress, on_progress, fold)

    def _differences(
        self, expected: ExpectedState, sessions: set[str]
    ) -> list[SessionDifference]:
        now_ms = int(time.time() * 1000)
        found = []
        for session_id in sorted(sessions):
            actual = self.target.read_session(session_id, now_ms=now_ms)
            expected_messages = expected.messages(session_id, now_ms=now_ms)
            want = [self.target.stored_form(m) for m in expected_messages]
            difference = compare(session_id, want, actual)
            if difference is not None:
                found.append(difference)
        return found

    def _verify_ends(self) -> dict[int, int]:
        ends = self._ends()
        recorded = self.target.positions()
        if recorded:
            ends = {p: min(end, recorded.get(p, end)) for p, end in ends.items()}
        return ends

    def _ends(self) -> dict[int, int]:
        ends = end_offsets(self.settings, self.settings.topic)
        if not ends:
            raise TopicError(f"topic {self.settings.topic!r} does not exist")
        return ends

    def _decode(self, raw: Any) -> Change | None:
        change = self.reader.read(raw)
        return None if type(change) is Refusal else change  # type: ignore[return-value]
