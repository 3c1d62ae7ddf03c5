"""The benchmark workload: 500-byte chat messages spread over many sessions.

Events are encoded with chatlog's own codec, so the projector and the raw
consumer read exactly what ``add_messages`` would have written.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from typing import Any

from kafka import KafkaProducer

from chatlog.errors import PublishError
from chatlog.producers.producer import EncodedEvent, EventProducer
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings

_WORDS = [
    "".join(random.Random(seed).choices(string.ascii_lowercase, k=1 + seed % 9))
    for seed in range(500)
]


def message_text(size: int, seed: int = 0) -> str:
    """Prose-like ASCII text of exactly ``size`` bytes."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def session_id(number: int) -> str:
    """The id of benchmark session ``number``."""
    return f"bench-session-{number:07d}"


def user_id(number: int) -> str:
    """The owner of benchmark session ``number`` (ten sessions per user)."""
    return f"bench-user-{number // 10:06d}"


def message_events(count: int, sessions: int, size: int, *, first_session: int = 0) -> Iterator[
    ChatEvent
]:
    """``count`` message events spread round-robin over ``sessions`` sessions."""
    texts = [message_text(size, seed) for seed in range(16)]
    for number in range(count):
        session = first_session + number % sessions
        kind = "human" if (number // sessions) % 2 == 0 else "ai"
        yield ChatEvent(
            session_id(session),
            MessageAppended(type=kind, content=texts[number % len(texts)]),
            user_id=user_id(session),
            source="bench",
        )


def raw_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """A plain kafka-python producer with the same durability as chatlog's (acks=all)."""
    return KafkaProducer(
        **settings.kafka_client_options(), acks="all", enable_idempotence=True, **options
    )


def encode_all(events: Iterator[ChatEvent], producer: EventProducer) -> list[EncodedEvent]:
    """Encode ``events`` with chatlog's codec, ready for a raw producer."""
    return [producer.encode(event) for event in events]


def seed_topic(settings: Settings, records: list[EncodedEvent]) -> None:
    """Publish pre-encoded ``records`` to ``settings.topic`` as fast as the broker takes them.

    Raises:
        PublishError: the broker did not acknowledge every record.
    """
    producer = raw_producer(settings, linger_ms=5, batch_size=256 * 1024)
    try:
        futures = [
            producer.send(settings.topic, key=r.key, value=r.value, headers=r.headers)
            for r in records
        ]
        producer.flush(timeout=120)
        for future in futures:
            if future.failed():
                raise PublishError(f"seeding the benchmark topic failed: {future.exception}")
    finally:
        producer.close(timeout=10)
