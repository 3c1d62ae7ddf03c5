"""Projector and rebuild throughput against a raw consumer reading the same topic.

Every rate here is the steady-state rate after the first batch: from the
moment the first batch has been handled to the moment the last event has,
so neither the consumer-group join of the projector nor the connection
setup of the others counts, and all three are timed the same way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from chatlog.errors import ChatLogError
from chatlog.producers.admin import end_offsets
from chatlog.projector.gc_threshold import SERVICE_GC_THRESHOLD
from chatlog.projector.replay import Replayer, ReplayProgress
from chatlog.projector.worker import Projector
from chatlog.settings import Settings


@dataclass(frozen=True, slots=True)
class Rate:
    """Events handled after the first batch, over the seconds they took."""

    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class _TimedProjector(Projector):
    """The real projector, timing its batches until ``expected`` events are handled."""

    def __init__(self, settings: Settings, expected: int) -> None:
        # Tuned as `chatlog projector run` runs it.
        super().__init__(settings, on_batch=_batch_done, gc_threshold=SERVICE_GC_THRESHOLD)
        self.expected = expected
        self.done = threading.Event()
        self.first_done_at: float | None = None
        self.first_events = 0
        self.last_done_at = 0.0

    def batch_done(self) -> None:
        """Note the time after each committed batch."""
        now = time.perf_counter()
        handled = self.stats.applied + self.stats.skipped + self.stats.dead_lettered
        if self.first_done_at is None:
            self.first_done_at, self.first_events = now, handled
        if handled >= self.expected and not self.done.is_set():
            self.last_done_at = now
            self.done.set()


def _batch_done(projector: Projector, _applied: int) -> None:
    assert isinstance(projector, _TimedProjector)
    projector.batch_done()


def projector_rate(settings: Settings, expected: int, timeout_s: float = 300.0) -> Rate:
    """Run a :class:`Projector` over a topic already holding ``expected`` events.

    Raises:
        ChatLogError: the projector did not handle every event within ``timeout_s``.
    """
    projector = _TimedProjector(settings, expected)
    with projector.running():
        if not projector.done.wait(timeout_s):
            raise ChatLogError(
                f"the projector handled {projector.stats.applied} of {expected} events "
                f"in {timeout_s:g}s"
            )
    assert projector.first_done_at is not None
    if projector.stats.dead_lettered:
        raise ChatLogError(f"{projector.stats.dead_lettered} benchmark events were dead-lettered")
    return Rate(expected - projector.first_events, projector.last_done_at - projector.first_done_at)


def raw_consumer_rate(settings: Settings, expected: int, timeout_s: float = 300.0) -> Rate:
    """Read ``expected`` events of ``settings.topic`` with a bare kafka-python consumer.

    Manual assignment, no group, no decoding: the ceiling of the client library.
    """
    ends = end_offsets(settings, settings.topic)
    consumer = KafkaConsumer(
        **settings.kafka_client_options(),
        enable_auto_commit=False,
        max_poll_records=settings.max_poll_records,
    )
    try:
        tps = [TopicPartition(settings.topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen = 0
        first_done_at: float | None = None
        first_events = 0
        deadline = time.monotonic() + timeout_s
        while seen < expected:
            if time.monotonic() > deadline:
                raise ChatLogError(f"the raw consumer read {seen} of {expected} events")
            batch = consumer.poll(timeout_ms=500, max_records=settings.max_poll_records)
            for records in batch.values():
                seen += len(records)
            if first_done_at is None and seen:
                first_done_at, first_events = time.perf_counter(), seen
        return Rate(expected - first_events, time.perf_counter() - (first_done_at or 0.0))
    finally:
        consumer.close(autocommit=False)


def rebuild_rate(settings: Settings, namespace: str) -> Rate:
    """Rebuild the whole topic into ``namespace`` with :meth:`Replayer.rebuild`."""
    first: list[tuple[float, int]] = []

    def on_progress(progress: ReplayProgress) -> None:
        if not first:
            first.append((time.perf_counter(), progress.done))

    replayer = Replayer(settings, gc_threshold=SERVICE_GC_THRESHOLD)  # as `chatlog replay` runs
    try:
        progress = replayer.rebuild(namespace, on_progress=on_progress)
        finished = time.perf_counter()
    finally:
        replayer.redis.close()
    started, first_events = first[0]
    return Rate(progress.done - first_events, finished - started)
