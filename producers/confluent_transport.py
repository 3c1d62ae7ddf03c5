"""The producer's optional Kafka client: :class:`ConfluentTransport` on confluent-kafka.

kafka-python spends about 2 ms of Python CPU on one acknowledged send (its
sender thread builds and parses every request in Python); librdkafka does
that in C on its own threads, about a quarter of it on the benchmark machine.
Under many concurrent appends the kafka-python producer becomes the
bottleneck of the application process long before the broker is.

Same guarantees as the default transport: an idempotent producer with
``acks=all``, so retries never duplicate or reorder; the ``murmur2_random``
partitioner, which puts a keyed record on the partition Java clients and
kafka-python pick (so both transports can write the same topic without
splitting a session across partitions); a publish returns only once every
record is acknowledged, or fails typed within the publish timeout. Needs the
``confluent`` extra (``pip install 'chatlog[confluent]'``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from chatlog.errors import BrokerUnavailableError, ConfigurationError, PublishError
from chatlog.producers.client_internals import (
    REFUSED_UNWRITTEN,
    TIMEOUTS,
    TOO_LARGE,
    UNKNOWN_TOPIC,
    release_confluent_producer,
)
from chatlog.producers.librdkafka import client_config, require_confluent_kafka
from chatlog.producers.records import (
    RECORD_OVERHEAD,
    EncodedEvent,
    LogPosition,
    not_acknowledged,
    reject_soon,
    resend_would_reorder,
    resolve_soon,
    too_large,
)
from chatlog.producers.replaceable import ReplaceableClient
from chatlog.settings import Settings

try:
    import confluent_kafka
except ImportError:  # pragma: no cover - depends on the installed extras
    confluent_kafka = None  # type: ignore[assignment]

log = logging.getLogger("chatlog.producer")

#: How long the delivery thread blocks in one poll: the longest a close waits for it.
_POLL_S = 0.1

#: Extra time a publish waits beyond the publish timeout, so that librdkafka's own
#: verdict on a record (it times records out at the publish timeout) is the one reported.
_GRACE_S = 1.0


def producer_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka configuration equivalent to the kafka-python producer's options.

    Raises:
        ConfigurationError: ``CHATLOG_KAFKA_*`` pass-through options are set.
    """
    timeout_ms = int(settings.publish_timeout_s * 1000)
    largest = settings.max_event_bytes + RECORD_OVERHEAD
    return {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        # A lone append is sent at once, as with kafka-python's linger 0;
        # librdkafka's default (5 ms) would add to every synchronous append.
        "linger.ms": 0,
        "partitioner": "murmur2_random",
        "message.max.bytes": largest,
        "batch.size": min(1_000_000, largest),
        "message.timeout.ms": timeout_ms,
        "request.timeout.ms": min(timeout_ms, 30_000),
        "logger": logging.getLogger("chatlog.producer.librdkafka"),
    }


class _Delivery:
    """The acknowledgements of one synchronous send, filled in by the delivery thread."""

    __slots__ = ("done", "errors", "lock", "positions", "waiting")

    def __init__(self, count: int) -> None:
        self.positions: list[LogPosition | None] = [None] * count
        self.errors: list[Any] = [None] * count
        self.waiting = count
        self.done = threading.Event()
        # Reports come from the delivery thread, and from the thread that
        # discards a broken producer (its purged records), possibly at once.
        self.lock = threading.Lock()

    def report(self, index: int, error: Any, message: Any) -> None:
        with self.lock:
            if error is not None:
                self.errors[index] = error
            else:
                self.positions[index] = LogPosition(message.partition(), message.offset())
            self.waiting -= 1
            if self.waiting == 0:
                self.done.set()


class ConfluentTransport:
    """Sends encoded events with confluent-kafka's idempotent producer and waits for the acks.

    One daemon thread serves librdkafka's delivery reports (``poll``) and hands
    each to the publish waiting for it, so any number of threads can publish
    at once without polling for each other. Thread-safe.

    Raises:
        ConfigurationError: confluent-kafka is not installed, or the settings
            cannot be expressed for it.
    """

    def __init__(self, settings: Settings) -> None:
        require_confluent_kafka()
        self.settings = settings
        self._config = producer_config(settings)
        self._clients: ReplaceableClient[Any] = ReplaceableClient(
            self._create, release_confluent_producer
        )
        self._poller = threading.Thread(
            target=self._serve_deliveries, name="chatlog-confluent-deliveries", daemon=True
        )
        self._poller.start()

    def _create(self) -> Any:
        try:
            return confluent_kafka.Producer(self._config)
        except confluent_kafka.KafkaException as exc:
            raise ConfigurationError(f"cannot create the confluent-kafka producer: {exc}") from exc

    def _serve_deliveries(self) -> None:
        while not self._clients.closed:
            try:
                self._clients.client.poll(_POLL_S)
            except Exception:  # a callback bug must not end delivery for everyone
                log.exception("serving confluent-kafka delivery reports failed")

    def send(self, topic: str, records: Sequence[EncodedEvent]) -> list[LogPosition]:
        """Send pre-encoded records to ``topic`` in order and wait for every acknowledgement.

        Records the broker refused for producer-state reasons (a fenced or
        out-of-sequence idempotent producer, typically the first send after an
        outage) were not written: they are sent once more on a fresh producer
        within the same publish timeout, unless that could reorder a session
        (a later record of its session was already acknowledged).

        Raises:
            BrokerUnavailableError: not every record was acknowledged within the
                publish timeout (the unacknowledged ones may still have been written).
            PublishError: the broker refused a record, or the producer is closed.
        """
        timeout = self.settings.publish_timeout_s
        deadline = time.monotonic() + timeout
        positions: list[LogPosition | None] = [None] * len(records)
        pending = list(range(len(records)))
        for attempt in (1, 2):
            producer = self._clients.current()
            delivery = _Delivery(len(pending))
            self._produce(producer, topic, [records[i] for i in pending], deadline,
                          delivery.report)
            if not delivery.done.wait(max(deadline - time.monotonic(), 0) + _GRACE_S):
                self._clients.failed(producer)
                raise not_acknowledged(len(records), timeout)
            refused: list[int] = []
            for index, position, error in zip(
                pending, delivery.positions, delivery.errors, strict=True
            ):
                if error is None:
                    positions[index] = position
                elif error.code() in REFUSED_UNWRITTEN and attempt == 1:
                    refused.append(index)
                else:
                    raise self._failure(producer, topic, len(records), error)
            if not refused:
                break
            self._clients.failed(producer)
            if resend_would_reorder(records, positions, pending, refused):
                error = delivery.errors[pending.index(refused[0])]
                raise self._failure(producer, topic, len(records), error)
            pending = refused
        return [p for p in positions if p is not None]

    async def asend(self, topic: str, records: Sequence[EncodedEvent]) -> list[LogPosition]:
        """Async :meth:`send`: awaits the acknowledgements without blocking the loop."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.publish_timeout_s
        waiters: list[asyncio.Future[Any]] = [loop.create_future() for _ in records]

        def report(index: int, error: Any, message: Any) -> None:
            if error is not None:
                reject_soon(loop, waiters[index], _Refusal(error))
            else:
                resolve_soon(loop, waiters[index],
                             LogPosition(message.partition(), message.offset()))

        # Replacing a broken producer releases the old one (a flush), and a full
        # local queue makes produce() wait: both happen on a worker thread.
        producer = await asyncio.to_thread(
            self._current_and_produce, topic, records, time.monotonic() + timeout, report
        )
        try:
            done = await asyncio.wait_for(asyncio.gather(*waiters), timeout=timeout + _GRACE_S)
        except asyncio.TimeoutError as exc:
            self._clients.failed(producer)
            raise not_acknowledged(len(records), timeout) from exc
        except _Refusal as refusal:
            raise self._failure(producer, topic, len(records), refusal.error) from None
        return list(done)

    def _current_and_produce(
        self, topic: str, records: Sequence[EncodedEvent], deadline: float, report: Any
    ) -> Any:
        producer = self._clients.current()
        self._produce(producer, topic, records, deadline, report)
        return producer

    def _produce(
        self,
        producer: Any,
        topic: str,
        records: Sequence[EncodedEvent],
        deadline: float,
        report: Any,
    ) -> None:
        """Hand ``records`` to ``producer`` in order; ``report(i, error, message)`` hears each."""
        for index, record in enumerate(records):
            while True:
                try:
                    # A C partial per record: no Python frame to make or to call through.
                    producer.produce(
                        topic, value=record.value, key=record.key, headers=record.headers,
                        on_delivery=partial(report, index),
                    )
                    break
                except BufferError:
                    # librdkafka's local queue is full: wait for deliveries to drain it.
                    if time.monotonic() >= deadline:
                        self._clients.failed(producer)
                        raise BrokerUnavailableError(
                            f"the producer's queue stayed full for "
                            f"{self.settings.publish_timeout_s:g}s (CHATLOG_PUBLISH_TIMEOUT): "
                            "the broker is not taking records"
                        ) from None
                    time.sleep(0.005)
                except confluent_kafka.KafkaException as exc:
                    if exc.args and exc.args[0].code() in TOO_LARGE:
                        raise too_large(topic, exc.args[0].str()) from exc
                    self._clients.failed(producer)
                    raise PublishError(f"publishing to {topic!r} failed: {exc}") from exc
                except RuntimeError as exc:
                    # A close released the producer after current() handed it out.
                    raise PublishError("the producer is closed") from exc

    def _failure(self, producer: Any, topic: str, count: int, error: Any) -> PublishError:
        """The typed error for a delivery report's ``error``; a producer it broke is replaced."""
        code = error.code()
        if error.fatal() or code in REFUSED_UNWRITTEN or code in TIMEOUTS:
            self._clients.failed(producer)
        if code in TIMEOUTS:
            return not_acknowledged(count, self.settings.publish_timeout_s, error.str())
        if code in TOO_LARGE:
            return too_large(topic, error.str())
        if code in UNKNOWN_TOPIC:
            return PublishError(f"publishing to {topic!r} failed: the topic does not exist")
        return PublishError(f"publishing to {topic!r} failed: {error.str()}")

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for what is pending, fail the rest, and stop."""
        producer = self._clients.close()
        if producer is None:
            return
        self._poller.join()
        remaining = producer.flush(timeout_s)
        if remaining:
            # Records the broker never took within the timeout: their
            # publishes fail, so they are dropped, not kept.
            log.warning("closing the producer dropped %d unacknowledged record(s)", remaining)
        release_confluent_producer(producer)


class _Refusal(Exception):
    """Carries a librdkafka delivery error through an asyncio future."""

    def __init__(self, error: Any) -> None:
        super().__init__(error.str())
        self.error = error
