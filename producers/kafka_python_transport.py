"""The producer's default Kafka client: :class:`KafkaPythonTransport` on kafka-python."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    RecordListTooLargeError,
    UnknownProducerIdError,
)

from chatlog.errors import BrokerUnavailableError, PublishError
from chatlog.producers.client_internals import force_close_producer
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

#: Broker refusals of a whole batch for producer-state reasons: nothing of it was written.
_REFUSED_UNWRITTEN = (
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
    InvalidProducerEpochError,
)

#: Refusals of a record for its size, by the client or the broker: permanent.
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class KafkaPythonTransport:
    """Sends encoded events with kafka-python's idempotent producer (``acks=all``) and waits.

    The partitioner is kafka-python's default murmur2, the partition a Java
    client would pick for the same key. Thread-safe.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients = ReplaceableClient(self._create, force_close_producer)

    def _create(self) -> KafkaProducer:
        settings = self.settings
        try:
            return KafkaProducer(**producer_options(settings))
        except KafkaTimeoutError as exc:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {settings.kafka_bootstrap_servers} within "
                f"{settings.publish_timeout_s:g}s; check KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        except KafkaError as exc:
            raise PublishError(f"cannot create the Kafka producer: {exc}") from exc

    def send(self, topic: str, records: Sequence[EncodedEvent]) -> list[LogPosition]:
        """Send pre-encoded records to ``topic`` and wait for every acknowledgement.

        After a broker outage, the first batch per partition can be refused
        with a producer-sequence error while kafka-python bumps the producer
        epoch. The broker wrote none of it, so those records are sent once
        more, within the same publish timeout, unless that could reorder a
        session (a later record of its session was already acknowledged).
        """
        timeout = self.settings.publish_timeout_s
        deadline = time.monotonic() + timeout
        positions: list[LogPosition | None] = [None] * len(records)
        pending = list(range(len(records)))
        try:
            for attempt in (1, 2):
                # No flush: with linger 0 the sender drains each batch as soon as
                # it is made, and a flush would wake it once more (a socket write
                # and a lock hand-over per call) only to wait for the same acks
                # the futures below wait for, within the same deadline.
                producer, futures = self._send(topic, [records[i] for i in pending])
                refused: list[int] = []
                for index, future in zip(pending, futures, strict=True):
                    try:
                        metadata = future.get(timeout=max(deadline - time.monotonic(), 0.001))
                    except _REFUSED_UNWRITTEN:
                        self._clients.failed(producer)
                        if attempt == 2:
                            raise
                        refused.append(index)
                    except KafkaError as exc:
                        if not isinstance(exc, _TOO_LARGE):
                            self._clients.failed(producer)
                        raise
                    else:
                        positions[index] = _position(metadata)
                if not refused:
                    break
                if resend_would_reorder(records, positions, pending, refused):
                    future = futures[pending.index(refused[0])]
                    future.get(timeout=0)  # re-raises the refusal: a resend would reorder
                pending = refused
            return [p for p in positions if p is not None]
        except KafkaTimeoutError as exc:
            raise not_acknowledged(len(records), timeout) from exc
        except _TOO_LARGE as exc:
            raise too_large(topic, str(exc)) from exc
        except KafkaError as exc:
            raise PublishError(f"publishing to {topic!r} failed: {exc}") from exc

    async def asend(
        self, topic: str, encoded: Sequence[EncodedEvent]
    ) -> list[LogPosition]:
        """Async :meth:`send`: awaits the acknowledgements without blocking the loop.

        kafka-python's ``send`` blocks while it fetches a topic's metadata (the
        first send to a topic) or waits for buffer space, and replacing a
        broken producer bootstraps a new one; so the hand-over runs on a
        worker thread, and only the acknowledgements are awaited here.
        """
        loop = asyncio.get_running_loop()
        producer, futures = await asyncio.to_thread(self._send, topic, encoded)
        waiters = []
        for future in futures:
            waiter: asyncio.Future[Any] = loop.create_future()
            future.add_callback(resolve_soon, loop, waiter)
            future.add_errback(reject_soon, loop, waiter)
            waiters.append(waiter)
        try:
            done = await asyncio.wait_for(
                asyncio.gather(*waiters), timeout=self.settings.publish_timeout_s
            )
        except asyncio.TimeoutError as exc:
            self._clients.failed(producer)
            raise not_acknowledged(len(encoded), self.settings.publish_timeout_s) from exc
        except _TOO_LARGE as exc:
            raise too_large(topic, str(exc)) from exc
        except KafkaError as exc:
            raise PublishError(f"publishing to {topic!r} failed: {exc}") from exc
        return [_position(m) for m in done]

    def _send(
        self, topic: str, records: Sequence[EncodedEvent]
    ) -> tuple[KafkaProducer, list[Any]]:
        producer = self._clients.current()
        try:
            return producer, [
                producer.send(topic, key=r.key, value=r.value, headers=r.headers)
                for r in records
            ]
        except KafkaTimeoutError as exc:
            self._clients.failed(producer)
            raise BrokerUnavailableError(
                f"no metadata for topic {topic!r} within {self.settings.publish_timeout_s:g}s: "
                "the broker is unreachable or the topic does not exist"
            ) from exc
        except _TOO_LARGE as exc:
            raise too_large(topic, str(exc)) from exc
        except KafkaError as exc:
            raise PublishError(f"publishing to {topic!r} failed: {exc}") from exc

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is pending (up to ``timeout_s``) and close the connection."""
        producer = self._clients.close()
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except KafkaError:
            # Records the broker never took within the timeout: their
            # publishes already failed, so they are dropped, not kept.
            force_close_producer(producer)


def producer_options(settings: Settings) -> dict[str, Any]:
    """The kafka-python ``KafkaProducer`` options chatlog's producer runs with.

    The benchmark's raw producer baseline is built from the same options, so
    that it measures the client, not a different batch size.
    """
    timeout_ms = int(settings.publish_timeout_s * 1000)
    return {
        **settings.kafka_client_options(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 0,
        # With linger 0 the sender drains the accumulator while a call
        # is still adding records; 16 KiB batches then split a bulk
        # add_messages into many small requests (benchmarks: 0.6x of a
        # raw producer at 16 KiB, 0.9x at 256 KiB; a lone record is
        # sent at once either way). Never above the request size limit.
        "batch_size": min(256 * 1024, settings.max_event_bytes + RECORD_OVERHEAD),
        "max_request_size": settings.max_event_bytes + RECORD_OVERHEAD,
        "request_timeout_ms": min(timeout_ms, 30_000),
        "delivery_timeout_ms": timeout_ms,
        "max_block_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
    }


def _position(metadata: Any) -> LogPosition:
    return LogPosition(metadata.partition, metadata.offset)
