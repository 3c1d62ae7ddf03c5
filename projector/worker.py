"""The projector worker: consume the log, apply it to Redis, then commit.

Delivery is at least once and application exactly once: offsets are
committed only after the batch is in Redis (and its poison records are in
the dead-letter topic), and the apply step skips anything at or below a
session's last applied offset, so a redelivered batch is harmless. Commits
live in :mod:`~chatlog.projector.commits`, namespace following in
:mod:`~chatlog.projector.namespace_following`, outage retries in
:mod:`~chatlog.projector.outage_retry`, the checkpoint topic in
:mod:`~chatlog.projector.checkpoint_topic` and the consumer's setup in
:mod:`~chatlog.projector.consumer_setup`; this module is the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis
from kafka import TopicPartition
from kafka.errors import KafkaError

from chatlog.errors import BrokerUnavailableError, ReadModelError
from chatlog.eviction_guard import guard_eviction
from chatlog.producers.client_internals import group_rebalancing
from chatlog.producers.key_store import key_store_of
from chatlog.producers.producer import EventProducer
from chatlog.producers.rebalance import RebalanceListener
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal
from chatlog.projector.checkpoint_projection import CheckpointProjection
from chatlog.projector.checkpoint_topic import CheckpointTopic
from chatlog.projector.commits import OffsetCommits
from chatlog.projector.consumer_setup import ensure_projector_topics, open_consumer
from chatlog.projector.dead_letter import (
    DeadLetter,
    DeadLetterQueue,
    log_and_publish,
    record_event_type,
)
from chatlog.projector.gc_threshold import young_gc_threshold
from chatlog.projector.idle_pause import LISTENING_POLL_MS, IdlePause
from chatlog.projector.namespace_following import NamespaceFollower
from chatlog.projector.offset_gaps import OffsetGaps
from chatlog.projector.outage_retry import RETRY_MAX_S, RETRY_MIN_S, OutageRetry
from chatlog.projector.polled_batch import PolledBatch
from chatlog.projector.positions import BatchTarget
from chatlog.projector.read_model_repair import ReadModelRepair
from chatlog.projector.redis_projection import ApplyResult, RedisProjection
from chatlog.projector.stats import ProjectorStats
from chatlog.projector.wakeup_listener import WakeupListener, Woken
from chatlog.projector.woken_fetch import WokenFetch, open_woken_fetch
from chatlog.redis_clients import open_redis
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.projector.metrics import ProjectorMetrics

__all__ = ["IDLE_POLL_MS", "RETRY_MAX_S", "RETRY_MIN_S", "Projector", "ProjectorStats"]

log = logging.getLogger("chatlog.projector")

#: How long a poll may wait for records when no batch is in Redis. kafka-python
#: 3 sometimes finds no fetch in flight between two responses and sleeps the
#: whole poll timeout (up to its 100 ms retry backoff) instead of fetching:
#: at 100 ms that was most of append -> visible p90/p99 at 1k msg/s (90 and
#: 120 ms; 17 and 22-34 ms at 10 ms, for about 10% of a core more).
IDLE_POLL_MS = 10

#: Repairs tried for one batch before it waits out a backoff (the damage came
#: back each time: something keeps deleting keys).
REPAIR_ROUNDS = 3


class Projector:
    """A consumer-group worker that folds the event topic into the Redis read model.

    Run it in the foreground with :meth:`run` (``chatlog projector run``), or in
    a background thread with :meth:`running` (tests, the demo, small apps)::

        with Projector(settings).running():
            ...

    Args:
        settings: Connection and topic settings.
        namespace: Read-model namespace to project into; when not given, the active
            namespace (``settings.namespace`` until a rebuild switches it), followed
            across switches.
        redis_client: Redis client for the read model (default: from ``settings.redis_url``).
        on_batch: Called after each committed batch with its :class:`ApplyResult`
            totals; used by metrics.
        metrics: Prometheus metrics to report to (``chatlog projector run --metrics-port``).
        gc_threshold: Python's generation-0 GC threshold while :meth:`run` runs
            (restored after); ``None`` leaves the interpreter's. It is
            process-wide, so only a process of the projector's own should set
            it (``chatlog projector run`` uses
            :data:`~chatlog.projector.gc_threshold.SERVICE_GC_THRESHOLD`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str | None = None,
        redis_client: redis.Redis | None = None,
        on_batch: Callable[[Projector, int], None] | None = None,
        metrics: ProjectorMetrics | None = None,
        gc_threshold: int | None = None,
    ) -> None:
        self.settings = settings
        self.gc_threshold = gc_threshold
        self.redis = redis_client or open_redis(settings.redis_url, mode=settings.redis_mode)
        self.following = NamespaceFollower(
            self.redis, settings, namespace or settings.namespace, pinned=namespace is not None
        )
        self.codec = EventCodec()
        # CHATLOG_ENCRYPTION_KEY: sealed messages are opened before they are projected.
        self.key_store = key_store_of(settings)
        self.reader = ChangeReader(
            self.codec, settings.max_event_bytes, key_store=self.key_store
        )
        self.stats = ProjectorStats()
        self.on_batch = on_batch
        self.metrics = metrics
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._retry = OutageRetry(self._stop, self.stats, metrics)
        self.commits = OffsetCommits(settings.transport, self.stats, metrics)
        self.repair = ReadModelRepair(settings, self.redis, self.stats, metrics, self._stop)
        self.gaps = OffsetGaps(self.stats)
        # Checkpoints stay in the configured namespace, where ChatLogCheckpointSaver
        # reads them: a rebuild's namespace switch moves chat sessions only (the
        # checkpoint log is rebuilt by chatlog.projector.checkpoint_replay).
        self.checkpoints = CheckpointTopic(
            CheckpointProjection(self.redis, self.following.namespace),
            retry=self._retry,
            publish_letters=self._publish_letters,
            commits=self.commits,
            stats=self.stats,
        )
        #: Writers' wake-ups (CHATLOG_WAKEUP); ``None`` when off or with no pub/sub.
        self.wakeups: WakeupListener | None = None
        self._idle: IdlePause | None = None
        self._woken: WokenFetch | None = None
        self._producer: EventProducer | None = None
        self._dlq: DeadLetterQueue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def namespace(self) -> str:
        """The namespace batches are applied to now (follows a rebuild's switch)."""
        return self.following.namespace

    @property
    def projection(self) -> RedisProjection:
        """The Redis projection of :attr:`namespace`."""
        return self.following.projection

    @property
    def consumer(self) -> Any:
        """The group consumer while the worker runs (a KafkaConsumer or a ConfluentConsumer)."""
        return self.commits.consumer

    # -- lifecycle -------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def wait_assigned(self, timeout_s: float = 30.0) -> bool:
        """Block until the group assigned this worker its partitions."""
        return self._assigned.wait(timeout_s)

    def assignment(self) -> set[int]:
        """Partitions currently assigned to this worker."""
        consumer = self.consumer
        return {tp.partition for tp in consumer.assignment()} if consumer else set()

    @contextmanager
    def running(self, *, wait_assigned_s: float = 30.0) -> Iterator[Projector]:
        """Run the projector in a background thread for the duration of the block."""
        self._thread = threading.Thread(target=self._run_guarded, name="chatlog-projector")
        self._thread.daemon = True
        self._thread.start()
        try:
            if wait_assigned_s and not self.wait_assigned(wait_assigned_s):
                self._raise_if_failed()
                raise BrokerUnavailableError(
                    f"the projector got no partitions within {wait_assigned_s:g}s"
                )
            yield self
        finally:
            self.stop()
            self._thread.join(timeout=60)
        self._raise_if_failed()

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # handed to the thread that owns the context
            self._error = exc
            self._assigned.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- the loop ---------------------------------------------------------

    def run(self) -> None:
        """Consume and apply until :meth:`stop`; then finish the batch, commit, close.

        Batches overlap: while Redis runs batch N, the worker polls and
        decodes batch N+1, and only then reads N's verdicts, dead-letters and
        commits it. Redis runs what one connection sends in order, so N+1
        always sees everything N did.
        """
        guard_eviction(self.redis, self.settings)
        self._open()
        consumer = self.consumer
        assert consumer is not None
        # A namespace that lost everything while no projector ran is rebuilt first.
        self._retry(lambda: self.repair.ensure_generation(self.namespace), "check the read model")
        with young_gc_threshold(self.gc_threshold):
            self._loop(consumer)

    def _loop(self, consumer: Any) -> None:
        in_flight: PolledBatch | None = None
        pending: Woken = {}
        rebalancing = False
        try:
            while not self._stop.is_set():
                self.stats.last_poll_at = time.time()
                idle = self._idle
                try:
                    batch = consumer.poll(
                        # Do not wait for records while a batch is in Redis. A paused
                        # worker still polls with a wait: kafka-python moves a group
                        # join on only within a poll's wait.
                        timeout_ms=0 if in_flight else (
                            LISTENING_POLL_MS
                            if idle is not None and idle.listening and not rebalancing
                            else IDLE_POLL_MS
                        ),
                        max_records=self.settings.max_poll_records,
                    )
                    if idle is not None:
                        idle.polled(sum(len(raws) for raws in batch.values()))
                        # While the group is negotiated the worker stays in its
                        # polls (see group_rebalancing), not on the wake-up channel.
                        rebalancing = group_rebalancing(consumer)
                        woken = idle.after_poll(
                            consumer,
                            records=bool(batch),
                            busy=in_flight is not None or rebalancing,
                        )
                        for tp, offset in woken.items():
                            if offset > pending.get(tp, -1):
                                pending[tp] = offset
                        # Kept until nothing else is fetched or applied: the group
                        # consumer's records come first, and a woken fetch starts
                        # from its position after them.
                        if idle.streaming:
                            pending = {}
                        elif pending and not batch and in_flight is None:
                            batch = self._fetch_woken(consumer, pending)
                            pending = {}
                except KafkaError as exc:
                    log.warning("poll failed, retrying: %s", exc)
                    if self.metrics is not None:
                        self.metrics.error("kafka", "poll")
                    batch = {}
                    if in_flight is None:
                        self._retry.sleep(RETRY_MIN_S * 10)
                        continue
                if consumer.assignment():
                    self._assigned.set()
                if batch:
                    # Nothing past a record the consumer skipped is applied: the
                    # apply would then skip that record for good (issue 14).
                    batch = self.gaps.cut(batch, consumer)
                    accepted = self.gaps.take_accepted()
                    if accepted:
                        self.following.sent({
                            tp.partition: o
                            for tp, o in accepted.items()
                            if tp.topic == self.settings.topic
                        })
                prepared = self._prepare(batch) if batch else None
                if in_flight is not None:
                    self._finish(in_flight)
                    in_flight = None
                # Nothing is in Redis now: look for lost state now and then.
                self._retry(lambda: self.repair.check(self.namespace), "check the read model")
                if prepared is not None:
                    in_flight = self._send(prepared)
                elif not batch and consumer.assignment():
                    self._retry(lambda: self._plan({}), "follow the active namespace")
                if self.metrics is not None:
                    # Readiness must not count polled-but-unapplied events as applied.
                    unapplied = in_flight.unapplied() if in_flight else None
                    self.metrics.loop_iterated(consumer, unapplied)
        finally:
            if in_flight is not None:
                self._finish(in_flight)
            if self.metrics is not None:
                self.metrics.stopped()
            self._close()

    def _fetch_woken(self, consumer: Any, woken: Woken) -> dict[Any, list[Any]]:
        """The records of the woken partitions this worker owns, from its own positions.

        The group consumer is sought past what is returned, so it never hands
        out the same records again; were it to (a seek that failed), the
        apply step skips what is at or below a session's applied offset.

        Raises:
            KafkaError: a position or the fetch failed (the poll's own retry handles it).
        """
        assigned = consumer.assignment()
        wanted = {}
        for (topic, partition), offset in woken.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                position = consumer.position(tp)
                # At or below the position: already polled, maybe already applied.
                if offset >= position:
                    wanted[tp] = (position, offset)
        if not wanted:
            return {}
        if self._woken is None:
            self._woken = open_woken_fetch(self.settings)
        batch = self._woken.read(wanted, self.settings.max_poll_records)
        self.stats.woken_records += sum(len(raws) for raws in batch.values())
        for tp, raws in batch.items():
            try:
                consumer.seek(tp, raws[-1].offset + 1)
            except (KafkaError, BrokerUnavailableError) as exc:
                log.debug("could not move %s past a woken fetch (%s): it is read again", tp, exc)
        return batch

    def _prepare(self, batch: dict[Any, list[Any]]) -> PolledBatch | None:
        """Read a polled batch into changes and dead letters, and choose its namespace.

        ``None`` when nothing of it is left to apply (checkpoint records only,
        partitions rewound, or stopping).
        """
        checkpoint_topic = self.settings.checkpoint_topic
        if any(tp.topic == checkpoint_topic for tp in batch):
            # The checkpoint script has no loss check of its own: a namespace that
            # lost its keys is repaired before checkpoints are applied to it.
            self._retry(
                lambda: self.repair.ensure_generation(self.namespace), "check the read model"
            )
            self.checkpoints.process(
                {t: r for t, r in batch.items() if t.topic == checkpoint_topic}
            )
            batch = {t: r for t, r in batch.items() if t.topic != checkpoint_topic}
            if not batch:
                # Checkpoint traffic alone must not keep the chat side from
                # following a namespace switch, as it does when idle.
                self._retry(lambda: self._plan({}), "follow the active namespace")
                return None
        changes: list[Change] = []
        letters: list[DeadLetter] = []
        next_offsets: dict[TopicPartition, int] = {}
        read = self.reader.read
        shredded = self.reader.shredded
        for tp, raws in batch.items():
            for raw in raws:
                change = read(raw)
                if type(change) is Refusal:
                    letters.append(DeadLetter(raw, str(change)))
                else:
                    # A shredded event (erased subject) is a change too: it only
                    # moves its session's position, and is never dead-lettered.
                    changes.append(change)  # type: ignore[arg-type]
            if raws:
                next_offsets[tp] = raws[-1].offset + 1
        shredded = self.reader.shredded - shredded
        if shredded:
            self.stats.shredded += shredded
            if self.metrics is not None:
                self.metrics.shredded.inc(shredded)
        first = {tp.partition: raws[0].offset for tp, raws in batch.items() if raws}
        plan = self._retry(lambda: self._plan(first), "read the active namespace")
        if plan is None:
            return None
        if plan.rewind:
            # The namespace lacks records before these partitions' batches: they are
            # read again from its position instead of leaving a gap.
            changes = [c for c in changes if c.partition not in plan.rewind]
            letters = [x for x in letters if x.record.partition not in plan.rewind]
            next_offsets = {
                tp: o for tp, o in next_offsets.items() if tp.partition not in plan.rewind
            }
            if not next_offsets:
                return None
        return PolledBatch(batch, changes, letters, next_offsets, self.projection)

    def _send(self, batch: PolledBatch) -> PolledBatch:
        """Write the batch to Redis (its verdicts are read by :meth:`_finish`)."""
        batch.started = time.perf_counter()
        batch.pending = self._retry(batch.send, "apply to Redis")
        # Everything below these offsets is in Redis once the batch has run,
        # and Redis runs the next batch after it: no gap check needed there.
        self.following.sent({tp.partition: o for tp, o in batch.next_offsets.items()})
        return batch

    def _finish(self, batch: PolledBatch) -> None:
        """Read the batch's verdicts, dead-letter what failed, commit its offsets."""
        result = self._retry(lambda: self._result(batch), "apply to Redis")
        apply_seconds = time.perf_counter() - batch.started
        if result is None:
            return  # stopping during an outage: nothing committed, the batch comes again
        letters = batch.letters
        if result.failed:
            raw_at = {(r.partition, r.offset): r for raws in batch.raws.values() for r in raws}
            for record, reason in result.failed:
                letters.append(DeadLetter(raw_at[(record.partition, record.offset)], str(reason)))
        if letters and self._retry(lambda: self._publish_letters(letters), "dead-letter") is None:
            return
        self.stats.batches += 1
        self.stats.count_applied(result.applied, result.skipped, result.applied_by_type)
        self.stats.deduplicated += result.deduplicated
        self.stats.conflicts += result.conflicts
        self.stats.dead_lettered += len(letters)
        for letter in letters:
            name = record_event_type(letter.record)
            self.stats.dead_lettered_by_type[name] = (
                self.stats.dead_lettered_by_type.get(name, 0) + 1
            )
        self.commits.commit(batch.next_offsets)
        if self.metrics is not None:
            self.metrics.batch_applied(
                result,
                [record_event_type(letter.record) for letter in letters],
                apply_seconds,
            )
        if self.on_batch is not None:
            self.on_batch(self, result.applied)

    def _result(self, batch: PolledBatch) -> ApplyResult:
        """The batch's verdicts, after repairing what its apply found lost (then sent again)."""
        result = batch.result()
        namespace = batch.projection.keys.namespace
        for _ in range(REPAIR_ROUNDS):
            if not (result.namespace_lost or result.holes):
                return result
            if result.lost_slots:
                self.repair.repair_lost_slots(namespace, result.lost_slots)
            elif result.namespace_lost:
                self.repair.ensure_generation(namespace)
            else:
                self.repair.repair_sessions(namespace, result.holes)
            # The repair moved the namespace's positions: check them again.
            self.following.known.clear()
            result = _merged(result, batch.result())
        if result.namespace_lost or result.holes:
            raise ReadModelError(
                f"namespace {namespace!r} kept losing state during {REPAIR_ROUNDS} repairs"
            )
        return result

    def _plan(self, first: dict[int, int]) -> BatchTarget:
        """Follow a namespace switch and seek back gaps (see :class:`NamespaceFollower`)."""
        return self.following.plan(self.consumer, first)

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        self.commits.revoked(revoked)
        # Whoever owned them meanwhile moved them on: no gap to look for there.
        self.gaps.forget(revoked)

    def _publish_letters(self, letters: list[DeadLetter]) -> bool:
        assert self._dlq is not None
        return log_and_publish(self._dlq, letters)

    def commit_applied(self, partitions: set[Any] | None = None) -> None:
        """Synchronously commit what was applied (on ``partitions``, default all) and forget it."""
        self.commits.commit_applied(partitions)

    def _open(self) -> None:
        settings = self.settings
        ensure_projector_topics(settings)
        if settings.wakeup:
            listener = WakeupListener(settings, (settings.topic, settings.checkpoint_topic))
            # Subscribed before the first fetch, so no write after it goes unannounced.
            if listener.open():
                self.wakeups = listener
                self._idle = IdlePause(listener, self.stats)
        consumer = open_consumer(settings)
        consumer.subscribe(
            [settings.topic, settings.checkpoint_topic],
            listener=RebalanceListener(
                self.metrics.rebalanced if self.metrics else None,
                before_revoke=self._revoked,
            ),
        )
        self.commits.consumer = consumer
        # Dead letters are sent as they were read: this producer seals nothing,
        # so it shares the worker's key store rather than opening another.
        self._producer = EventProducer(settings, codec=self.codec, key_store=self.key_store)
        self._dlq = DeadLetterQueue(self._producer, settings.dlq_topic)

    def _close(self) -> None:
        if self.commits.consumer is not None:
            self.commits.commit_applied()
            self.commits.consumer.close(autocommit=False)
            self.commits.consumer = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        self._idle = None
        if self._woken is not None:
            self._woken.close()
            self._woken = None
        if self.wakeups is not None:
            self.wakeups.close()
            self.wakeups = None
        self._assigned.clear()


def _merged(first: ApplyResult, again: ApplyResult) -> ApplyResult:
    """One batch's verdicts from its first send and its send after a repair.

    What the first send applied, the second skipped; refusals are the second's
    (the same records get the same verdicts).
    """
    again.applied += first.applied
    again.skipped = max(again.skipped - first.applied, 0)
    for name, count in first.applied_by_type.items():
        again.applied_by_type[name] = again.applied_by_type.get(name, 0) + count
        left = again.skipped_by_type.get(name, 0) - count
        if left > 0:
            again.skipped_by_type[name] = left
        else:
            again.skipped_by_type.pop(name, None)
    again.applied_records = first.applied_records + again.applied_records
    return again
