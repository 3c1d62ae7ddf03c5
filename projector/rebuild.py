"""Rebuild: project the whole log (or the log as of a time) into a namespace, and switch to it.

A rebuild applies records with the same :meth:`RedisProjection.apply` the
live projector uses, so every rule of the projection (clears, deletions,
ownership, expiry) holds in a rebuild too. It records its progress in the
target namespace's applied positions
(:class:`~chatlog.projector.positions.AppliedPositions`) after every batch:
killed half-way, it resumes from there. Switching readers is one write of
the active-namespace pointer; the live projector follows it and, thanks to
the applied positions, re-reads whatever the new namespace has not applied
yet rather than leaving a gap.
"""

from __future__ import annotations

import time
from contextlib import suppress
from datetime import datetime
from functools import partial

import redis

from chatlog.errors import ChatLogError, ReplayError
from chatlog.keys import ReadModelKeys
from chatlog.namespaces import POINTER_TTL_S
from chatlog.projector.gc_threshold import young_gc_threshold
from chatlog.projector.namespace_admin import NamespaceAdmin
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.redis_projection import PendingApply, RedisProjection
from chatlog.projector.replay_log import ReplayLog, millis
from chatlog.projector.replay_progress import ProgressCallback, ReplayProgress

#: Rounds of catching up with appends made during a rebuild before it is done.
CATCH_UP_ROUNDS = 5
#: After a switch, the rebuild keeps applying new appends for this long, so the
#: new namespace stays current while readers and the projector move over.
HANDOFF_S = 4 * POINTER_TTL_S

STATE_BUILDING = "building"
STATE_COMPLETE = "complete"


class NamespaceRebuild:
    """Rebuilds whole namespaces of one replay target from one log.

    Args:
        log: The topic to read.
        admin: The target Redis and its active-namespace pointer.
        gc_threshold: Python's generation-0 GC threshold while log ranges are
            applied (see :mod:`chatlog.projector.gc_threshold`); ``None`` leaves
            the interpreter's.
    """

    def __init__(
        self, log: ReplayLog, admin: NamespaceAdmin, *, gc_threshold: int | None = None
    ) -> None:
        self.log = log
        self.admin = admin
        self.target = admin.target
        self.gc_threshold = gc_threshold

    def run(
        self,
        namespace: str,
        *,
        as_of: datetime | None = None,
        switch: bool = False,
        on_progress: ProgressCallback | None = None,
        handoff_s: float = HANDOFF_S,
    ) -> ReplayProgress:
        """Project the log into ``namespace``; see :meth:`chatlog.projector.Replayer.rebuild`."""
        if switch and as_of is not None:
            raise ReplayError(
                "switching readers to a rebuild as of a time would serve them a past state "
                "that the live projector then moves forward; rebuild as of a time without "
                "switching"
            )
        if switch and not self.target.is_home():
            raise ReplayError(
                "cannot switch readers to another Redis deployment; point REDIS_URL at it instead"
            )
        client = self.target.redis
        as_of_ms = millis(as_of) if as_of is not None else None
        progress = ReplayProgress(namespace=namespace, as_of=as_of)
        positions = AppliedPositions(client, namespace)
        ends = self.log.ends(as_of_ms)
        begins = self.log.beginnings(ends)
        marker = self.target.call(lambda: client.hgetall(ReadModelKeys(namespace).rebuild()))
        if marker:
            recorded_as_of = marker.get(b"as_of_ms", b"").decode()
            if recorded_as_of != ("" if as_of_ms is None else str(as_of_ms)):
                raise ReplayError(
                    f"namespace {namespace!r} holds a rebuild as of "
                    f"{recorded_as_of or 'now'}; resume it as of the same time, or drop it"
                )
            recorded = positions.read()
            starts = {p: max(begins[p], recorded.get(p, begins[p])) for p in ends}
            progress.resumed = True
        else:
            self.target.mark(
                namespace,
                state=STATE_BUILDING,
                # Keys do not name their topic; the marker lets `replay namespaces` tell.
                topic=self.target.settings.topic,
                as_of_ms="" if as_of_ms is None else str(as_of_ms),
                started_at=str(int(time.time() * 1000)),
            )
            # Recorded before anything is applied: a live projector writing here
            # (an in-place rebuild) then rewinds to the beginning instead of
            # applying newer events first, which would make the older ones skipped.
            positions.advance(begins)
            starts = dict(begins)
        reached = self._project(namespace, starts, ends, progress, on_progress, as_of_ms)
        if as_of_ms is None:
            for _ in range(CATCH_UP_ROUNDS):
                newer = self.log.ends(None)
                if all(newer[p] <= reached.get(p, 0) for p in newer):
                    break
                reached = self._project(namespace, reached, newer, progress, on_progress, None)
        self.target.mark(
            namespace,
            state=STATE_COMPLETE,
            finished_at=str(int(time.time() * 1000)),
            events=str(progress.done),
        )
        progress.finished_at = time.monotonic()
        if switch:
            progress.switched_from = self.admin.active.switch(client, namespace)
            deadline = time.monotonic() + handoff_s
            while time.monotonic() < deadline:
                newer = self.log.ends(None)
                if any(newer[p] > reached.get(p, 0) for p in newer):
                    reached = self._project(namespace, reached, newer, progress, on_progress, None)
                else:
                    time.sleep(0.05)
        progress.positions = reached
        return progress

    def _project(
        self,
        namespace: str,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
        as_of_ms: int | None,
    ) -> dict[int, int]:
        """Apply ``[starts, ends)`` of every partition to ``namespace``; return where it got."""
        projection = RedisProjection(
            self.target.redis, namespace, session_ttl_s=self.target.settings.session_ttl_s
        )
        reached = dict(starts)

        def finish(batch: PendingApply, next_offsets: dict[int, int]) -> None:
            result = self.target.call(batch.result)
            progress.applied += result.applied
            progress.skipped += result.skipped
            progress.failed += len(result.failed)
            reached.update(next_offsets)
            if on_progress is not None:
                on_progress(progress)

        # As in the live projector: the next batch is polled and read while
        # Redis runs this one (its positions recorded by its last call); only
        # one batch is ever in Redis, so batches apply in log order.
        in_flight: tuple[PendingApply, dict[int, int]] | None = None
        with young_gc_threshold(self.gc_threshold):
            try:
                for records, next_offsets in self.log.read(
                    starts, ends, progress, as_of_ms=as_of_ms
                ):
                    if in_flight is not None:
                        done, in_flight = in_flight, None
                        finish(*done)
                    sent = self.target.call(
                        partial(projection.send, records, advance=next_offsets)
                    )
                    in_flight = (sent, next_offsets)
            except BaseException:
                if in_flight is not None:
                    # Its verdicts (and its connection) are still owed; the error
                    # that stopped the replay is the one to report.
                    with suppress(ChatLogError, redis.RedisError):
                        finish(*in_flight)
                raise
            if in_flight is not None:
                finish(*in_flight)
        return reached
