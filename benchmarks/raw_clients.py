"""The raw-client baselines: each transport next to its own client, with chatlog's settings.

A raw producer is built from the very options chatlog's producer uses
(``producer_options`` for kafka-python, ``producer_config`` for
confluent-kafka), so a ratio measures chatlog's own work, not a different
batch size. Raw consumers read by manual assignment with no group and no
decoding: the ceiling of the client library.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from chatlog.errors import ChatLogError, PublishError
from chatlog.producers.admin import end_offsets
from chatlog.producers.kafka_python_transport import producer_options
from chatlog.producers.records import EncodedEvent
from chatlog.settings import Settings

_MIB = 1024 * 1024

#: The tuned kafka-python consumer of issue 22: large fetches, large polls.
TUNED_FETCH: dict[str, int] = {
    "fetch_max_bytes": 50 * _MIB,
    "max_partition_fetch_bytes": 10 * _MIB,
    "max_poll_records": 5000,
}


class RawProducer(Protocol):
    """A bare client producer: send records and wait for their acks (acks=all)."""

    name: str

    def send_all(self, topic: str, records: Sequence[EncodedEvent]) -> None:
        """Send ``records`` and return once the broker acknowledged all of them."""

    def close(self) -> None:
        """Flush and close."""


class KafkaPythonRawProducer:
    """kafka-python's ``KafkaProducer`` on chatlog's own producer options."""

    name = "raw KafkaProducer, chatlog's options"

    def __init__(self, settings: Settings) -> None:
        self.timeout_s = settings.publish_timeout_s
        self.producer = KafkaProducer(**producer_options(settings))

    def send_all(self, topic: str, records: Sequence[EncodedEvent]) -> None:
        """``send`` each record, then ``get()`` each future (one record: ``send().get()``)."""
        futures = [
            self.producer.send(topic, key=r.key, value=r.value, headers=r.headers)
            for r in records
        ]
        for future in futures:
            future.get(timeout=self.timeout_s)

    def close(self) -> None:
        """Flush and close."""
        self.producer.close(timeout=10)


class ConfluentRawProducer:
    """confluent-kafka's ``Producer`` on chatlog's own librdkafka configuration."""

    name = "raw confluent-kafka Producer, chatlog's config"

    def __init__(self, settings: Settings) -> None:
        import confluent_kafka

        from chatlog.producers.confluent_transport import producer_config

        self.timeout_s = settings.publish_timeout_s
        self.producer: Any = confluent_kafka.Producer(producer_config(settings))

    def send_all(self, topic: str, records: Sequence[EncodedEvent]) -> None:
        """``produce`` each record, then ``flush`` until all are acknowledged."""
        failed: list[Any] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failed.append(error)

        for r in records:
            self.producer.produce(
                topic, key=r.key, value=r.value, headers=r.headers, on_delivery=delivered
            )
        if self.producer.flush(self.timeout_s) or failed:
            raise PublishError(f"the raw confluent producer failed: {failed or 'timed out'}")

    def close(self) -> None:
        """Flush."""
        self.producer.flush(10)


def raw_producer_for(settings: Settings) -> RawProducer:
    """The raw producer of the transport ``settings`` names."""
    if settings.transport == "confluent":
        return ConfluentRawProducer(settings)
    return KafkaPythonRawProducer(settings)


def kafka_python_read(
    settings: Settings, expected: int, *, tuned: bool, timeout_s: float = 300.0
) -> tuple[int, float, float]:
    """Read ``expected`` records with a bare ``KafkaConsumer``.

    Returns the records read after the first poll that returned any, the
    seconds and the CPU seconds of this process they took.
    """
    ends = end_offsets(settings, settings.topic)
    options: dict[str, Any] = dict(TUNED_FETCH) if tuned else {
        "max_poll_records": settings.max_poll_records
    }
    consumer = KafkaConsumer(
        **settings.kafka_client_options(), enable_auto_commit=False, **options
    )
    try:
        tps = [TopicPartition(settings.topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)

        def poll() -> int:
            batch = consumer.poll(timeout_ms=500, max_records=options["max_poll_records"])
            return sum(len(records) for records in batch.values())

        return _timed_read(poll, expected, timeout_s, "the raw kafka-python consumer")
    finally:
        consumer.close(autocommit=False)


def confluent_read(
    settings: Settings, expected: int, timeout_s: float = 300.0
) -> tuple[int, float, float]:
    """Read ``expected`` records with a bare confluent-kafka ``Consumer``.

    Returns what :func:`kafka_python_read` returns.
    """
    import confluent_kafka

    from chatlog.producers.librdkafka import client_config

    ends = end_offsets(settings, settings.topic)
    consumer = confluent_kafka.Consumer({
        **client_config(settings),
        "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    })
    try:
        consumer.assign([
            confluent_kafka.TopicPartition(settings.topic, p, confluent_kafka.OFFSET_BEGINNING)
            for p in ends
        ])

        def poll() -> int:
            return sum(1 for m in consumer.consume(5000, 0.5) if m.error() is None)

        return _timed_read(poll, expected, timeout_s, "the raw confluent-kafka consumer")
    finally:
        consumer.close()


def _timed_read(
    poll: Callable[[], int], expected: int, timeout_s: float, what: str
) -> tuple[int, float, float]:
    """Call ``poll`` (records it read) until ``expected``; time all but the first records.

    Raises:
        ChatLogError: fewer than ``expected`` records within ``timeout_s``.
    """
    seen = 0
    first: tuple[float, float, int] | None = None
    deadline = time.monotonic() + timeout_s
    while seen < expected:
        if time.monotonic() > deadline:
            raise ChatLogError(f"{what} read {seen} of {expected} events in {timeout_s:g}s")
        seen += poll()
        if first is None and seen:
            first = (time.perf_counter(), time.process_time(), seen)
    assert first is not None
    return (expected - first[2], time.perf_counter() - first[0], time.process_time() - first[1])
