"""The projector's optional confluent-kafka transport (``CHATLOG_TRANSPORT=confluent``).

kafka-python parses every fetched record in Python, about 12 µs per event on
the benchmark machine: most of what a projector on it can spend per event.
librdkafka fetches and parses in C on its own threads, so the projector's
thread is left with decoding and applying. :class:`ConfluentConsumer`
gives the :class:`~chatlog.projector.worker.Projector` the few
``KafkaConsumer`` methods it uses (``poll``, ``commit``, ``commit_async``, ``assignment``,
``position``, ``seek``, ``pause``, ``resume``, ``highwater``, ``close``), with kafka-python's
``TopicPartition`` keys and its error types, so the worker's
commit-after-apply loop and its dead-lettering are the same code on both
transports. Needs the ``confluent`` extra (``pip install chatlog[confluent]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from chatlog.errors import BrokerUnavailableError
from chatlog.producers.client_internals import PARTITION_EOF, REBALANCE
from chatlog.producers.librdkafka import client_config, require_confluent_kafka
from chatlog.producers.rebalance import RebalanceListener
from chatlog.settings import Settings

try:
    import confluent_kafka
except ImportError:  # pragma: no cover - depends on the installed extras
    confluent_kafka = None  # type: ignore[assignment]

log = logging.getLogger("chatlog.projector")

class ConfluentRecord(NamedTuple):
    """One fetched record, with the attributes of kafka-python's ``ConsumerRecord`` chatlog uses."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    message: Any

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The record's headers (read only for dead letters, so not copied for every record)."""
        headers: list[tuple[str, bytes]] | None = self.message.headers()
        return headers or []


# NamedTuple's generated __new__ is Python code; this is the C constructor it
# calls, a microsecond less for each of the projector's records.
_new_record = tuple.__new__


def grouped_records(messages: list[Any]) -> dict[TopicPartition, list[ConfluentRecord]]:
    """confluent-kafka messages as records grouped by partition, in fetch order.

    Raises:
        KafkaError: librdkafka reported an error instead of a record.
    """
    batch: dict[tuple[Any, Any], list[ConfluentRecord]] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() in PARTITION_EOF:
                continue
            raise KafkaError(f"confluent-kafka fetch failed: {error.str()}")
        topic, partition = message.topic(), message.partition()
        record = _new_record(
            ConfluentRecord,
            (topic, partition, message.offset(), message.key(), message.value(), message),
        )
        records = batch.get((topic, partition))
        if records is None:
            batch[(topic, partition)] = [record]
        else:
            records.append(record)
    return {TopicPartition(t, p): records for (t, p), records in batch.items()}


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka configuration equivalent to the projector's kafka-python consumer options.

    Raises:
        ConfigurationError: ``CHATLOG_KAFKA_*`` pass-through options are set; they are
            kafka-python option names and have no librdkafka meaning.
    """
    return {
        **client_config(settings),
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.consumer_session_timeout_ms,
        "heartbeat.interval.ms": settings.consumer_heartbeat_interval_ms,
        # As for kafka-python: brokers that hold a fetch for the whole wait
        # (the embedded Tansu) would add it to append -> visible latency.
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
    }


class ConfluentConsumer:
    """A group consumer on confluent-kafka with the ``KafkaConsumer`` surface the projector uses.

    Raises:
        ConfigurationError: confluent-kafka is not installed, or the settings
            cannot be expressed for it.
    """

    def __init__(self, settings: Settings) -> None:
        require_confluent_kafka()
        self._consumer = confluent_kafka.Consumer(
            {**consumer_config(settings), "on_commit": self._on_commit}
        )
        self._listener: RebalanceListener | None = None
        self._assigned: set[TopicPartition] = set()
        # librdkafka answers asynchronous commits through one callback, served in
        # consume(); the worker passes the same callback with every commit.
        self._commit_callback: Callable[[Any, Exception], None] | None = None
        self._async_commits = 0

    def subscribe(self, topics: list[str], listener: RebalanceListener | None = None) -> None:
        """Join the group on ``topics``; ``listener`` hears assignments and revocations."""
        self._listener = listener
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        assigned = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._assigned = assigned
        if self._listener is not None:
            self._listener.on_partitions_assigned(assigned)

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        revoked = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._assigned -= revoked
        if self._listener is not None:
            self._listener.on_partitions_revoked(revoked)

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[TopicPartition, list[Any]]:
        """Up to ``max_records`` records, grouped by partition in fetch order.

        Raises:
            KafkaError: librdkafka reported an error instead of a record.
        """
        try:
            messages = self._consumer.consume(max_records, timeout_ms / 1000)
        except confluent_kafka.KafkaException as exc:
            raise KafkaError(f"confluent-kafka consume failed: {exc}") from exc
        return grouped_records(messages)

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching ``partitions`` (an idle worker waiting for a wake-up)."""
        self._consumer.pause(
            [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        )

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` again."""
        self._consumer.resume(
            [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in partitions]
        )

    def assignment(self) -> set[TopicPartition]:
        """The partitions the group currently gives this consumer."""
        return set(self._assigned)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int:
        """The offset of the next record this consumer reads from ``tp``."""
        target = confluent_kafka.TopicPartition(tp.topic, tp.partition)
        try:
            offset = self._consumer.position([target])[0].offset
            if offset < 0:  # nothing fetched yet: the committed offset, else the start
                timeout = 10.0 if timeout_ms is None else max(timeout_ms / 1000, 0.001)
                offset = self._consumer.committed([target], timeout=timeout)[0].offset
            if offset < 0:
                offset = self._consumer.get_watermark_offsets(target, cached=True)[0]
        except confluent_kafka.KafkaException as exc:
            raise KafkaError(f"confluent-kafka position of {tp} failed: {exc}") from exc
        return int(max(offset, 0))

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end as of the last fetch, ``None`` before one."""
        target = confluent_kafka.TopicPartition(tp.topic, tp.partition)
        try:
            high = self._consumer.get_watermark_offsets(target, cached=True)[1]
        except confluent_kafka.KafkaException:
            return None
        return int(high) if high is not None and high >= 0 else None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` on.

        Raises:
            BrokerUnavailableError: the partition is not being fetched yet (just
                assigned); the worker retries its plan, and the seek with it.
        """
        try:
            self._consumer.seek(confluent_kafka.TopicPartition(tp.topic, tp.partition, offset))
        except confluent_kafka.KafkaException as exc:
            raise BrokerUnavailableError(
                f"cannot seek {tp.topic}-{tp.partition} to {offset} yet: {exc}"
            ) from exc

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets`` synchronously.

        Raises:
            CommitFailedError: the group rebalanced; the next owner redelivers.
            KafkaError: any other commit failure.
        """
        targets = [
            confluent_kafka.TopicPartition(tp.topic, tp.partition, meta.offset)
            for tp, meta in offsets.items()
        ]
        try:
            self._consumer.commit(offsets=targets, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            raise _commit_error(exc) from exc

    def commit_async(
        self,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        callback: Callable[[Any, Exception], None] | None = None,
    ) -> None:
        """Send a commit of ``offsets``; ``callback(offsets, error)`` hears of a failure.

        Raises:
            KafkaError: librdkafka refused to queue the commit.
        """
        targets = [
            confluent_kafka.TopicPartition(tp.topic, tp.partition, meta.offset)
            for tp, meta in offsets.items()
        ]
        self._commit_callback = callback
        try:
            self._consumer.commit(offsets=targets, asynchronous=True)
        except confluent_kafka.KafkaException as exc:
            raise _commit_error(exc) from exc
        self._async_commits += 1

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        if self._async_commits == 0:
            return  # the answer to a synchronous commit, which raised instead
        self._async_commits -= 1
        if error is None:
            error = next((p.error for p in partitions if p.error is not None), None)
        if error is None or self._commit_callback is None:
            return
        offsets = {TopicPartition(p.topic, p.partition): p.offset for p in partitions}
        if error.code() in REBALANCE:
            failure: Exception = CommitFailedError(f"confluent-kafka commit: {error.str()}")
        else:
            failure = KafkaError(f"confluent-kafka commit failed: {error.str()}")
        self._commit_callback(offsets, failure)

    def close(self, autocommit: bool = False) -> None:
        """Leave the group (never commits: the worker commits after each apply)."""
        del autocommit
        self._consumer.close()


def _commit_error(exc: Exception) -> KafkaError:
    """kafka-python's error for a failed librdkafka commit (a rebalance or anything else)."""
    error: Any = exc.args[0] if exc.args else None
    if error is not None and error.code() in REBALANCE:
        return CommitFailedError(f"confluent-kafka commit: {error.str()}")
    return KafkaError(f"confluent-kafka commit failed: {exc}")
