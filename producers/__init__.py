"""The Kafka layer (installed as ``chatlog.producers``).

Publishing events (:class:`EventProducer` on either client's transport), topic
administration, the consumer transports and bounded range reads the projector
and replays use, and :mod:`~chatlog.producers.client_internals`, the only
module that reaches past a Kafka client's public API.
"""

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
