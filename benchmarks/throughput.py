"""Projector and rebuild throughput against a raw consumer reading the same topic.

Every rate here is the steady-state rate after the first batch: from the
moment the first batch has been handled to the moment the last event has,
so neither the consumer-group join of the projector nor the connection
setup of the others counts, and all three are timed the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from chatlog.benchmarks.cpu import redis_cpu_s
from chatlog.benchmarks.raw_clients import confluent_read, kafka_python_read
from chatlog.errors import ChatLogError
from chatlog.producers.records import EncodedEvent
from chatlog.projector.gc_threshold import SERVICE_GC_THRESHOLD
from chatlog.projector.replay import Replayer, ReplayProgress
from chatlog.projector.worker import Projector
from chatlog.settings import Settings


@dataclass(frozen=True, slots=True)
class Rate:
    """Events handled after the first batch, over the seconds they took.

    ``cpu_s`` is this process's CPU time over the same span (it runs nothing
    else meanwhile); ``redis_cpu_s`` the Redis server's.
    """

    events: int
    seconds: float
    cpu_s: float = 0.0
    redis_cpu_s: float = 0.0

    @property
    def cpu_us_per_event(self) -> float:
        """CPU microseconds of the measuring process per event."""
        return self.cpu_s / self.events * 1e6 if self.events else 0.0

    @property
    def redis_us_per_event(self) -> float:
        """The Redis server's CPU microseconds per event."""
        return self.redis_cpu_s / self.events * 1e6 if self.events else 0.0

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
        # (process CPU, Redis CPU) at the first and at the last batch.
        self.first_cpu = (0.0, 0.0)
        self.last_cpu = (0.0, 0.0)

    def batch_done(self) -> None:
        """Note the time after each committed batch."""
        now = time.perf_counter()
        handled = self.stats.applied + self.stats.skipped + self.stats.dead_lettered
        if self.first_done_at is None:
            self.first_done_at, self.first_events = now, handled
            self.first_cpu = (time.process_time(), redis_cpu_s(self.redis))
        if handled >= self.expected and not self.done.is_set():
            self.last_done_at = now
            self.last_cpu = (time.process_time(), redis_cpu_s(self.redis))
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
    return Rate(
        expected - projector.first_events,
        projector.last_done_at - projector.first_done_at,
        projector.last_cpu[0] - projector.first_cpu[0],
        projector.last_cpu[1] - projector.first_cpu[1],
    )


def raw_consumer_rate(settings: Settings, expected: int, *, tuned: bool) -> Rate:
    """Read ``expected`` events of ``settings.topic`` with a bare kafka-python consumer.

    ``tuned`` gives it large fetches and polls (:data:`TUNED_FETCH`); otherwise
    it has kafka-python's default fetch sizes and the projector's poll size.
    """
    return Rate(*kafka_python_read(settings, expected, tuned=tuned))


def raw_confluent_rate(settings: Settings, expected: int) -> Rate:
    """Read ``expected`` events of ``settings.topic`` with a bare confluent-kafka consumer."""
    return Rate(*confluent_read(settings, expected))


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


def raw_redis_rate(
    client: redis.Redis, prefix: str, records: Sequence[EncodedEvent], batch: int = 2000
) -> Rate:
    """Store the records' bytes the barest way: a pipelined ``RPUSH`` per record, by key.

    The Redis-side floor of a read model: the same payloads onto a list per
    session, one round trip per ``batch``. Its keys are deleted afterwards.
    """
    keys = [prefix + (r.key or b"").decode("utf-8", "replace") for r in records]
    started = (time.perf_counter(), time.process_time(), redis_cpu_s(client))
    for first in range(0, len(records), batch):
        pipe = client.pipeline(transaction=False)
        for key, record in zip(keys[first:first + batch], records[first:first + batch],
                               strict=True):
            pipe.rpush(key, record.value)
        pipe.execute()
    rate = Rate(len(records), time.perf_counter() - started[0],
                time.process_time() - started[1], redis_cpu_s(client) - started[2])
    unique = sorted(set(keys))
    for first in range(0, len(unique), 1000):
        client.delete(*unique[first:first + 1000])
    return rate
