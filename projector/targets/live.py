"""The live projector for a read-model target (``chatlog projector run --target URL``).

One consumer group per target (:func:`target_group`), so a Redis projector
and, say, a PostgreSQL projector each read the whole log at their own pace.
The target's recorded positions are authoritative: when a partition is
assigned, the consumer seeks to the target's position for it (a target built
by ``chatlog replay rebuild --target`` continues from where the rebuild got,
with no gap and nothing applied twice); the group's committed offsets only
matter for a target that records none. Each polled batch is applied with
its positions in one :meth:`~ReadModelTarget.apply`; a target that holds the
LangGraph saver's read model (:class:`CheckpointTarget`) also gets the
checkpoint topic (``<topic>.checkpoints``) in the same group, applied with its
own per-partition positions through :meth:`~CheckpointTarget.apply_checkpoints`;
refused records go to the dead-letter topic; the offsets are committed after both. A store outage
is retried with backoff (applying again is idempotent).

This is a plain loop, not the Redis worker's pipelined one: a SQL or
DynamoDB round trip costs more than the Python around it, so overlapping the
next poll with the apply buys little there.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from chatlog.errors import ChatLogError, PublishError, TargetError
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal
from chatlog.projector.checkpoint_projection import CheckpointRecord, decode_record
from chatlog.projector.consumer_setup import kafka_python_consumer
from chatlog.projector.dead_letter import DeadLetter, DeadLetterQueue
from chatlog.projector.offset_gaps import OffsetGaps
from chatlog.projector.targets.protocol import CheckpointTarget, ReadModelTarget
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings

log = logging.getLogger("chatlog.projector")

RETRY_MIN_S = 0.05
RETRY_MAX_S = 5.0
POLL_MS = 200


def target_group(group: str, target_url: str) -> str:
    """The consumer group of ``group``'s projector into ``target_url`` (one per target)."""
    digest = hashlib.sha256(target_url.encode()).hexdigest()[:12]
    return f"{group}.target-{digest}"


class _SeekToPositions(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projector: TargetProjector) -> None:
        self.projector = projector

    def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to flush: every applied batch is committed before the next poll."""

    def on_partitions_assigned(self, assigned: Any) -> None:
        """Start each partition at the target's recorded position."""
        # Where the previous owner left them is no gap of this worker's.
        self.projector.gaps.forget(assigned)
        self.projector.seek_to_positions(assigned)


class TargetProjector:
    """Consumes the log in its own group and keeps one read-model target up to date.

    Args:
        settings: Kafka connection, topic, group (suffixed per target).
        target: The store to project into; closed by :meth:`run` when it ends.
    """

    def __init__(self, settings: Settings, target: ReadModelTarget) -> None:
        self.settings = settings
        self.target = target
        self.group = target_group(settings.consumer_group, target.url)
        self.reader = ChangeReader(EventCodec(), settings.max_event_bytes)
        #: The target's checkpoint side, when it holds the LangGraph saver's read model.
        self.checkpoints = target if isinstance(target, CheckpointTarget) else None
        self.checkpoint_codec = CheckpointCodec()
        self.applied = 0
        self.dead_lettered = 0
        #: Offset gaps in what the consumer delivered (see chatlog.projector.offset_gaps).
        self.gaps_reread = 0
        self.gaps_accepted = 0
        self.gaps = OffsetGaps(self)
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._consumer: KafkaConsumer | None = None
        self._failure: BaseException | None = None

    def stop(self) -> None:
        """Finish the current batch and return from :meth:`run`."""
        self._stop.set()

    def wait_assigned(self, timeout_s: float = 30.0) -> bool:
        """Wait until the group gave this projector its partitions."""
        return self._assigned.wait(timeout_s)

    @contextmanager
    def running(self, *, wait_assigned_s: float = 30.0) -> Iterator[TargetProjector]:
        """Run in a background thread for the ``with`` block; stop and join at its end."""
        thread = threading.Thread(target=self._run_guarded, name="chatlog-target-projector")
        thread.start()
        try:
            self.wait_assigned(wait_assigned_s)
            yield self
        finally:
            self.stop()
            thread.join(timeout=30)
        if self._failure is not None:
            raise self._failure

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported by running() in the caller's thread
            self._failure = exc

    def run(self) -> None:
        """Consume and apply until :meth:`stop`.

        Raises:
            BrokerUnavailableError, TopicError: Kafka cannot be reached or set up.
        """
        settings = self.settings
        topics = [settings.topic]
        if self.checkpoints is not None:
            topics.append(settings.checkpoint_topic)
        if settings.auto_create_topic:
            for topic in (*topics, settings.dlq_topic):
                ensure_topic(topic, settings.partitions, settings.replication_factor,
                             settings=settings)
        consumer = kafka_python_consumer(settings, group=self.group)
        self._consumer = consumer
        producer = EventProducer(settings)
        dlq = DeadLetterQueue(producer, settings.dlq_topic)
        try:
            consumer.subscribe(topics, listener=_SeekToPositions(self))
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=POLL_MS)
                if batch:
                    # Nothing past a record the consumer skipped: the target's
                    # idempotent apply would skip that record for good.
                    batch = self.gaps.cut(batch, consumer)
                if batch:
                    self._process(consumer, dlq, batch)
        finally:
            consumer.close()
            producer.close()
            self.target.close()

    def seek_to_positions(self, assigned: Any) -> None:
        """Seek each assigned partition to the target's recorded position, when it has one."""
        positions = self._retry(self.target.positions)
        checkpoints = self.checkpoints
        recorded = {} if checkpoints is None else self._retry(checkpoints.checkpoint_positions)
        consumer = self._consumer
        if positions is None or recorded is None or consumer is None:
            return
        by_topic = {self.settings.topic: positions, self.settings.checkpoint_topic: recorded}
        for tp in assigned:
            # Positions are per topic-partition: each topic has its own table or items.
            at = by_topic.get(tp.topic, {})
            if isinstance(at, dict) and tp.partition in at:
                consumer.seek(tp, at[tp.partition])
        self._assigned.set()

    def _process(
        self, consumer: KafkaConsumer, dlq: DeadLetterQueue, batch: dict[Any, list[Any]]
    ) -> None:
        checkpoint_topic = self.settings.checkpoint_topic
        if any(tp.topic == checkpoint_topic for tp in batch):
            self._process_checkpoints(
                consumer, dlq, {tp: r for tp, r in batch.items() if tp.topic == checkpoint_topic}
            )
            batch = {tp: r for tp, r in batch.items() if tp.topic != checkpoint_topic}
            if not batch:
                return
        changes: list[Change] = []
        letters: list[DeadLetter] = []
        raw_at: dict[tuple[int, int], Any] = {}
        advance: dict[int, int] = {}
        for tp, raws in batch.items():
            for raw in raws:
                change = self.reader.read(raw)
                if type(change) is Refusal:
                    letters.append(DeadLetter(raw, str(change)))
                else:
                    changes.append(change)  # type: ignore[arg-type]
                    raw_at[(raw.partition, raw.offset)] = raw
            if raws:
                advance[tp.partition] = raws[-1].offset + 1
        result = self._retry(lambda: self.target.apply(changes, advance=advance))
        if result is None:
            return  # stopping during an outage: nothing committed, the batch comes again
        letters += [
            DeadLetter(raw_at[(c.partition, c.offset)], str(why)) for c, why in result.failed
        ]
        if letters and self._retry(lambda: dlq.publish(letters)) is None:
            return
        self.applied += result.applied
        self.dead_lettered += len(letters)
        self._commit(consumer, self.settings.topic, advance)

    def _process_checkpoints(
        self, consumer: KafkaConsumer, dlq: DeadLetterQueue, batch: dict[Any, list[Any]]
    ) -> None:
        """The checkpoint topic's share of a batch: decode, apply with positions, dead-letter."""
        target = self.checkpoints
        if target is None:
            return
        records: list[CheckpointRecord] = []
        letters: list[DeadLetter] = []
        raw_at: dict[tuple[int, int], Any] = {}
        advance: dict[int, int] = {}
        for tp, raws in batch.items():
            for raw in raws:
                raw_at[(raw.partition, raw.offset)] = raw
                try:
                    records.append(decode_record(self.checkpoint_codec, raw))
                except ChatLogError as exc:
                    letters.append(DeadLetter(raw, f"undecodable: {exc}"))
            if raws:
                advance[tp.partition] = raws[-1].offset + 1
        result = self._retry(lambda: target.apply_checkpoints(records, advance=advance))
        if result is None:
            return
        letters += [DeadLetter(raw_at[(r.partition, r.offset)], why) for r, why in result.failed]
        if letters and self._retry(lambda: dlq.publish(letters)) is None:
            return
        self.applied += result.applied
        self.dead_lettered += len(letters)
        self._commit(consumer, self.settings.checkpoint_topic, advance)

    @staticmethod
    def _commit(consumer: KafkaConsumer, topic: str, advance: dict[int, int]) -> None:
        offsets = {
            TopicPartition(topic, p): OffsetAndMetadata(o, None, -1) for p, o in advance.items()
        }
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance took the partitions: the next owner seeks to the
            # target's positions, which this batch already advanced.
            log.info("commit after a target batch failed (%s); positions are in the target", exc)

    def _retry(self, action: Any) -> Any:
        """``action()``, retried with backoff through store and broker outages; None if stopped."""
        delay = RETRY_MIN_S
        while True:
            try:
                return True if (value := action()) is None else value
            except (TargetError, PublishError) as exc:
                log.warning("target projector: %s; retrying in %.2fs", exc, delay)
            except ChatLogError:
                raise
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_S)


def run_target_service(settings: Settings, target: ReadModelTarget) -> None:
    """``chatlog projector run --target URL``: run until SIGTERM/SIGINT, then exit cleanly."""
    import signal

    worker = TargetProjector(settings, target)

    def _stop(signum: int, frame: object) -> None:
        log.info("signal %s: finishing the current batch, then exiting", signum)
        worker.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    log.info("projecting %s into %s (group %s)", settings.topic, target.url, worker.group)
    started = time.monotonic()
    worker.run()
    log.info("stopped after %.0fs: %d applied, %d dead-lettered",
             time.monotonic() - started, worker.applied, worker.dead_lettered)
