"""The dead-letter topic: where records the projector cannot apply are kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from chatlog.producers.producer import EncodedEvent, EventProducer

#: Headers added to a dead-lettered record, next to the original ones.
HEADER_REASON = "dlq-reason"
HEADER_TOPIC = "dlq-original-topic"
HEADER_PARTITION = "dlq-original-partition"
HEADER_OFFSET = "dlq-original-offset"
HEADER_VALUE_OMITTED = "dlq-value-omitted"


class DeadLetter(NamedTuple):
    """A raw Kafka record that could not be applied, and why."""

    record: Any  # kafka.consumer.fetcher.ConsumerRecord
    reason: str


class DeadLetterQueue:
    """Publishes unapplicable records to ``<topic>.dlq`` with their coordinates.

    The original key, value and headers are kept byte for byte, so a record
    can be inspected, fixed and re-published by hand.
    """

    def __init__(self, producer: EventProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish ``letters`` and wait for the broker's acknowledgement."""
        if not letters:
            return
        encoded = []
        for letter in letters:
            record = letter.record
            headers = [(k, v) for k, v in (record.headers or []) if not k.startswith("dlq-")]
            headers += [
                (HEADER_REASON, letter.reason.encode("utf-8", "replace")[:4096]),
                (HEADER_TOPIC, record.topic.encode()),
                (HEADER_PARTITION, str(record.partition).encode()),
                (HEADER_OFFSET, str(record.offset).encode()),
            ]
            value = record.value or b""
            if len(value) > self.producer.settings.max_event_bytes:
                # Too big for this producer to send: publishing it would fail on
                # every retry and stall the projector. The log keeps the original
                # at the coordinates above, so the letter carries only its size.
                headers.append((HEADER_VALUE_OMITTED, str(len(value)).encode()))
                value = b""
            encoded.append(EncodedEvent(record.key, value, headers))
        self.producer.send_encoded(self.topic, encoded)
