"""The projector worker: consume the log, apply it to Redis, then commit.

Delivery is at least once and application exactly once: offsets are
committed only after the batch is in Redis (and its poison records are in
the dead-letter topic), and the apply step skips anything at or below a
session's last applied offset, so a redelivered batch is harmless. That
commit is sent without waiting for the broker's answer (a synchronous one
cost about as much as decoding and applying the batch); the last applied
offsets are committed synchronously when partitions are revoked and when
the worker stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
)
from kafka.structs import OffsetAndMetadata

from chatlog.errors import BrokerUnavailableError, ChatLogError, ReadModelError
from chatlog.namespaces import ActiveNamespace
from chatlog.producers.admin import ensure_topic
from chatlog.producers.key_store import key_store_of
from chatlog.producers.producer import EventProducer
from chatlog.producers.rebalance import RebalanceListener
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal, RefusalReason
from chatlog.projector.checkpoint_projection import CheckpointProjection, decode_record
from chatlog.projector.dead_letter import DeadLetter, DeadLetterQueue, key_text, short_reason
from chatlog.projector.gc_threshold import young_gc_threshold
from chatlog.projector.positions import BatchTarget, ProjectionTarget
from chatlog.projector.redis_projection import ApplyResult, PendingApply, RedisProjection
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.projector.metrics import ProjectorMetrics

log = logging.getLogger("chatlog.projector")

#: How long a poll may wait for records when no batch is in Redis. kafka-python
#: 3 sometimes finds no fetch in flight between two responses and sleeps the
#: whole poll timeout (up to its 100 ms retry backoff) instead of fetching:
#: at 100 ms that was most of append -> visible p90/p99 at 1k msg/s (90 and
#: 120 ms; 17 and 22-34 ms at 10 ms, for about 10% of a core more).
IDLE_POLL_MS = 10

#: Backoff bounds while Redis or the dead-letter topic is unreachable.
RETRY_MIN_S = 0.05
RETRY_MAX_S = 5.0


@dataclass(slots=True)
class ProjectorStats:
    """Running totals of one projector, for tests, the CLI and metrics."""

    batches: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    shredded: int = 0
    commits_failed: int = 0
    retries: int = 0
    applied_by_type: dict[str, int] = field(default_factory=dict)
    dead_lettered_by_type: dict[str, int] = field(default_factory=dict)
    last_poll_at: float = 0.0


@dataclass(slots=True, eq=False)
class _Batch:
    """One polled batch on its way through the worker: read, sent to Redis, finished."""

    raws: dict[Any, list[Any]]
    changes: list[Change]
    letters: list[DeadLetter]
    next_offsets: dict[TopicPartition, int]
    #: The namespace's projection when the batch was read (a retry goes there too).
    projection: RedisProjection
    pending: PendingApply | None = None
    started: float = 0.0

    def send(self) -> PendingApply:
        """Write the changes, and the partitions' applied positions after them."""
        return self.projection.send(
            self.changes, advance={tp.partition: o for tp, o in self.next_offsets.items()}
        )

    def unapplied(self) -> dict[tuple[str, int], int]:
        """Records polled per (topic, partition) and not applied until the batch finishes."""
        return {(tp.topic, tp.partition): len(raws) for tp, raws in self.raws.items()}

    def result(self) -> ApplyResult:
        """Redis's verdicts; after a failed read the batch is sent again (it is idempotent)."""
        pending = self.pending or self.send()
        self.pending = None
        return pending.result()


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
        self.namespace = namespace or settings.namespace
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url)
        self.projection = RedisProjection(
            self.redis, self.namespace, session_ttl_s=settings.session_ttl_s
        )
        self.target = ProjectionTarget(
            self.redis, self.namespace, active=None if namespace else ActiveNamespace.of(settings)
        )
        self.codec = EventCodec()
        self.key_store = key_store_of(settings)
        self.reader = ChangeReader(
            self.codec, settings.max_event_bytes, key_store=self.key_store
        )
        # Checkpoints stay in the configured namespace, where ChatLogCheckpointSaver
        # reads them: a rebuild's namespace switch moves chat sessions only (the
        # checkpoint log is rebuilt by chatlog.projector.checkpoint_replay).
        self.checkpoints = CheckpointProjection(self.redis, self.namespace)
        self.checkpoint_codec = CheckpointCodec()
        self.stats = ProjectorStats()
        self.on_batch = on_batch
        self.metrics = metrics
        self._stop = threading.Event()
        self._assigned = threading.Event()
        # A KafkaConsumer, or a ConfluentConsumer with the same methods.
        self._consumer: Any = None
        self._producer: EventProducer | None = None
        self._dlq: DeadLetterQueue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # Next offset per partition whose records are applied (and dead-lettered);
        # committed asynchronously after each batch, synchronously at a revoke or stop.
        self._applied: dict[TopicPartition, int] = {}
        # Next offset per partition this worker sent to the current namespace:
        # a batch starting at or below it cannot leave a gap there.
        self._known: dict[int, int] = {}

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
        consumer = self._consumer
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
        self._open()
        consumer = self._consumer
        assert consumer is not None
        with young_gc_threshold(self.gc_threshold):
            self._loop(consumer)

    def _loop(self, consumer: Any) -> None:
        in_flight: _Batch | None = None
        try:
            while not self._stop.is_set():
                self.stats.last_poll_at = time.time()
                try:
                    batch = consumer.poll(
                        # Do not wait for records while a batch is in Redis.
                        timeout_ms=0 if in_flight else IDLE_POLL_MS,
                        max_records=self.settings.max_poll_records,
                    )
                except KafkaError as exc:
                    log.warning("poll failed, retrying: %s", exc)
                    if self.metrics is not None:
                        self.metrics.error("kafka", "poll")
                    batch = {}
                    if in_flight is None:
                        self._sleep(RETRY_MIN_S * 10)
                        continue
                if consumer.assignment():
                    self._assigned.set()
                prepared = self._prepare(batch) if batch else None
                if in_flight is not None:
                    self._finish(in_flight)
                    in_flight = None
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

    def process(self, batch: dict[Any, list[Any]]) -> None:
        """Decode, apply and dead-letter one polled batch, then commit its offsets."""
        prepared = self._prepare(batch)
        if prepared is not None:
            self._finish(self._send(prepared))

    def _prepare(self, batch: dict[Any, list[Any]]) -> _Batch | None:
        """Read a polled batch into changes and dead letters, and choose its namespace.

        ``None`` when nothing of it is left to apply (checkpoint records only,
        partitions rewound, or stopping).
        """
        checkpoint_topic = self.settings.checkpoint_topic
        if any(tp.topic == checkpoint_topic for tp in batch):
            self._process_checkpoints(
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
        for tp, raws in batch.items():
            for raw in raws:
                change = read(raw)
                if type(change) is Refusal:
                    if change.reason is RefusalReason.SHREDDED:
                        # Erased: skipped like a deleted session's event, never dead-lettered.
                        self.stats.shredded += 1
                        if self.metrics is not None:
                            self.metrics.shredded.inc()
                        continue
                    letters.append(DeadLetter(raw, str(change)))
                else:
                    changes.append(change)  # type: ignore[arg-type]
            if raws:
                next_offsets[tp] = raws[-1].offset + 1
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
        return _Batch(batch, changes, letters, next_offsets, self.projection)

    def _send(self, batch: _Batch) -> _Batch:
        """Write the batch to Redis (its verdicts are read by :meth:`_finish`)."""
        batch.started = time.perf_counter()
        batch.pending = self._retry(batch.send, "apply to Redis")
        # Everything below these offsets is in Redis once the batch has run,
        # and Redis runs the next batch after it: no gap check needed there.
        for tp, offset in batch.next_offsets.items():
            self._known[tp.partition] = offset
        return batch

    def _finish(self, batch: _Batch) -> None:
        """Read the batch's verdicts, dead-letter what failed, commit its offsets."""
        result = self._retry(batch.result, "apply to Redis")
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
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.dead_lettered += len(letters)
        for name, count in result.applied_by_type.items():
            self.stats.applied_by_type[name] = self.stats.applied_by_type.get(name, 0) + count
        for letter in letters:
            name = _header(letter.record, "event-type") or "unknown"
            self.stats.dead_lettered_by_type[name] = (
                self.stats.dead_lettered_by_type.get(name, 0) + 1
            )
        self._commit(batch.next_offsets)
        if self.metrics is not None:
            self.metrics.batch_applied(
                result,
                [_header(letter.record, "event-type") or "unknown" for letter in letters],
                apply_seconds,
            )
        if self.on_batch is not None:
            self.on_batch(self, result.applied)

    def _plan(self, first: dict[int, int]) -> BatchTarget:
        """Follow a namespace switch, and seek back partitions the namespace has gaps in.

        ``first`` is the batch's first offset per partition. Only partitions
        this worker has not applied up to there itself are checked in Redis.
        """
        consumer = self._consumer
        assert consumer is not None
        if self.target.follow():
            self._known.clear()
            # Just switched: every assigned partition, idle ones too, may be
            # ahead of the new namespace; a reader waiting for its own write
            # there would otherwise wait for the next append to that partition.
            first = dict(first)
            for tp in consumer.assignment():
                if tp.topic == self.settings.topic:
                    first.setdefault(tp.partition, consumer.position(tp))
        known = self._known
        plan = self.target.plan(
            {p: offset for p, offset in first.items() if offset > known.get(p, -1)}
        )
        if plan.namespace != self.projection.keys.namespace:
            self.namespace = plan.namespace
            self.projection = RedisProjection(
                self.redis, plan.namespace, session_ttl_s=self.settings.session_ttl_s
            )
        for tp in consumer.assignment():
            if tp.topic == self.settings.topic and tp.partition in plan.rewind:
                consumer.seek(tp, plan.rewind[tp.partition])
        return plan

    def _process_checkpoints(self, batch: dict[Any, list[Any]]) -> None:
        """The checkpoint topic's share of a batch: decode, apply, dead-letter, commit."""
        records, letters, raws_at = [], [], {}
        for raws in batch.values():
            for raw in raws:
                raws_at[(raw.partition, raw.offset)] = raw
                try:
                    records.append(decode_record(self.checkpoint_codec, raw))
                except ChatLogError as exc:
                    letters.append(DeadLetter(raw, f"undecodable: {exc}"))
        result = self._retry(lambda: self.checkpoints.apply(records), "apply checkpoints")
        if result is None:
            return
        letters += [DeadLetter(raws_at[(r.partition, r.offset)], why) for r, why in result.failed]
        if letters and self._retry(lambda: self._publish_letters(letters), "dead-letter") is None:
            return
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.dead_lettered += len(letters)
        for name, count in result.applied_by_type.items():
            self.stats.applied_by_type[name] = self.stats.applied_by_type.get(name, 0) + count
        self._commit({tp: raws[-1].offset + 1 for tp, raws in batch.items() if raws})

    def _publish_letters(self, letters: list[DeadLetter]) -> bool:
        assert self._dlq is not None
        for letter in letters:
            log.error(
                "dead-lettering record: %s",
                short_reason(letter.reason),
                extra={
                    "topic": letter.record.topic,
                    "partition": letter.record.partition,
                    "offset": letter.record.offset,
                    "event_type": _header(letter.record, "event-type") or "unknown",
                    # The record key is the session id (an id, never message content).
                    "session_id": key_text(letter.record.key),
                },
            )
        self._dlq.publish(letters)
        return True

    def _retry(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action`` until it succeeds, backing off on outages; ``None`` if stopped."""
        delay = RETRY_MIN_S
        while True:
            try:
                return action()
            except (redis.ConnectionError, redis.TimeoutError, ReadModelError) as exc:
                error: Exception = exc
            except ChatLogError as exc:  # the dead-letter publish failed
                error = exc
            self.stats.retries += 1
            if self.metrics is not None:
                self.metrics.retried(what, error)
            log.warning("%s failed, retrying in %.2fs: %s", what, delay, error)
            if self._sleep(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_S)

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets of an applied batch without waiting for the broker."""
        consumer = self._consumer
        assert consumer is not None
        self._applied.update(offsets)
        try:
            consumer.commit_async(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                callback=self._committed,
            )
        except KafkaError as exc:
            self._commit_failed(exc)

    def _committed(self, _offsets: Any, response: Any) -> None:
        # Called by the consumer once the broker answered an asynchronous commit.
        if isinstance(response, Exception):
            self._commit_failed(response)

    def commit_applied(self, partitions: set[TopicPartition] | None = None) -> None:
        """Synchronously commit what was applied (on ``partitions``, default all) and forget it."""
        consumer = self._consumer
        chosen = [tp for tp in self._applied if partitions is None or tp in partitions]
        offsets = {tp: self._applied.pop(tp) for tp in chosen}
        if consumer is None or not offsets:
            return
        try:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except KafkaError as exc:
            self._commit_failed(exc)

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit the revoked partitions' applied offsets before another worker takes them."""
        if self.settings.transport == "confluent":
            self.commit_applied(revoked)
            return
        # kafka-python runs the listener on its IO thread, where a blocking commit
        # is refused; the batches' asynchronous commits were queued on the
        # coordinator connection before the poll that began this rebalance.
        for tp in revoked:
            self._applied.pop(tp, None)

    def _commit_failed(self, exc: Exception) -> None:
        if isinstance(exc, (CommitFailedError, RebalanceInProgressError, IllegalStateError)):
            # The group is rebalancing; whoever owns the partition next gets
            # these records again and the idempotent apply skips them.
            self.stats.commits_failed += 1
            log.info("commit skipped during a rebalance: %s", exc)
            return
        self.stats.commits_failed += 1
        if self.metrics is not None:
            self.metrics.error("kafka", "commit")
        log.warning("commit failed, the batch will be redelivered: %s", exc)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; return whether the projector is stopping."""
        return self._stop.wait(seconds)

    def _open(self) -> None:
        settings = self.settings
        if settings.auto_create_topic:
            ensure_topic(settings.topic, settings.partitions, settings.replication_factor,
                         settings=settings)
            ensure_topic(settings.dlq_topic, settings.partitions, settings.replication_factor,
                         settings=settings)
            ensure_topic(settings.checkpoint_topic, settings.partitions,
                         settings.replication_factor, settings=settings)
        if settings.transport == "confluent":
            # Imported here: confluent-kafka is an optional extra.
            from chatlog.producers.confluent_consumer import ConfluentConsumer

            self._consumer = ConfluentConsumer(settings)
        else:
            self._consumer = self._kafka_python_consumer()
        self._consumer.subscribe(
            [settings.topic, settings.checkpoint_topic],
            listener=RebalanceListener(
                self.metrics.rebalanced if self.metrics else None, before_revoke=self._revoked
            ),
        )
        # Dead letters are sent as they were read: this producer seals nothing,
        # so it shares the worker's key store rather than opening another.
        self._producer = EventProducer(settings, codec=self.codec, key_store=self.key_store)
        self._dlq = DeadLetterQueue(self._producer, settings.dlq_topic)

    def _kafka_python_consumer(self) -> KafkaConsumer:
        settings = self.settings
        try:
            return KafkaConsumer(
                **settings.kafka_client_options(),
                group_id=settings.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=settings.max_poll_records,
                session_timeout_ms=settings.consumer_session_timeout_ms,
                heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
                # Some Kafka-compatible brokers (the embedded Tansu) hold a fetch
                # for the whole wait even when records arrive, which lands in
                # append -> visible latency (benchmarks at 1k msg/s: p99 64 ms
                # at 100 ms, 19 ms at 20 ms). Kafka answers at once either way.
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )
        except KafkaTimeoutError as exc:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {settings.kafka_bootstrap_servers}"
            ) from exc

    def _close(self) -> None:
        if self._consumer is not None:
            self.commit_applied()
            self._consumer.close(autocommit=False)
            self._consumer = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        self._assigned.clear()


def _header(record: Any, name: str) -> str | None:
    for key, value in record.headers or []:
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None
