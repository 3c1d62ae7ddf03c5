"""Publishing chat events to Kafka (installed as ``chatlog.producers``)."""

from __future__ import annotations

from chatlog.producers.admin import end_offsets, ensure_topic, partition_count
from chatlog.producers.producer import EncodedEvent, EventProducer, LogPosition

__all__ = [
    "EncodedEvent",
    "EventProducer",
    "LogPosition",
    "end_offsets",
    "ensure_topic",
    "partition_count",
]
