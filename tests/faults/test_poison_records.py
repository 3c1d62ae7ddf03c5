"""Poison records in the topic go to the dead-letter topic; the events around them are applied."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import redis

from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.producers.producer import EncodedEvent, EventProducer
from chatlog.projector import Projector
from chatlog.projector.dead_letter import (
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    HEADER_VALUE_OMITTED,
)
from chatlog.schemas.codec import CONTENT_TYPE, MAGIC, EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, reconcile, wait_caught_up
from tests.helpers import read_topic

MAX_EVENT_BYTES = 64 * 1024
SESSIONS = [f"poison-{n}" for n in range(6)]


def _poison(session_id: str) -> dict[str, tuple[bytes | None, bytes | None, str]]:
    """Each kind of poison record for ``session_id``: (key, value, expected reason fragment)."""
    codec = EventCodec()
    key = session_id.encode()

    def avro(payload: MessageAppended, *, session: str = session_id) -> bytes:
        return codec.encode(ChatEvent(session, payload))

    big = avro(MessageAppended(type="human", content="x" * (MAX_EVENT_BYTES + 10)))
    huge = avro(MessageAppended(type="human", content="y" * (MAX_EVENT_BYTES * 3)))
    return {
        "random-bytes": (key, os.urandom(200), "undecodable"),
        "empty-value": (key, None, "undecodable"),
        "unknown-fingerprint": (key, MAGIC + b"\x01" * 8 + os.urandom(40), "unknown schema"),
        "truncated-avro": (
            key,
            avro(MessageAppended(type="human", content="cut"))[:-3],
            "undecodable",
        ),
        "bad-additional-kwargs": (
            key,
            avro(MessageAppended(type="human", content="c", additional_kwargs="{oops")),
            "additional_kwargs",
        ),
        "unknown-message-type": (
            key,
            avro(MessageAppended(type="bogus", content="c")),
            "unknown message type",
        ),
        "key-not-session": (
            b"someone-else",
            avro(MessageAppended(type="human", content="c")),
            "is not the session id",
        ),
        "over-size": (key, big, "over-size"),
        "over-size-beyond-dlq-limit": (key, huge, "over-size"),
    }


def _wait_dead_letters(settings: Settings, count: int) -> list[Any]:
    deadline = time.monotonic() + 60
    while True:
        if sum(end_offsets(settings, settings.dlq_topic).values()) >= count:
            return read_topic(settings, settings.dlq_topic)
        assert time.monotonic() < deadline, "the dead letters never arrived"
        time.sleep(0.2)


def test_poison_records_are_dead_lettered_and_the_valid_events_around_them_applied(
    settings_factory: Callable[..., Settings],
    projector_factory: Callable[..., Projector],
    redis_client: redis.Redis,
) -> None:
    """Random bytes, bad fingerprints, bad content and over-size records each reach the DLQ."""
    settings = settings_factory(max_event_bytes=MAX_EVENT_BYTES)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    ledger = Ledger()
    expected: dict[tuple[int, int], tuple[str, str]] = {}
    headers = [("event-type", b"MessageAppended"), ("content-type", CONTENT_TYPE.encode())]
    projector = projector_factory(settings)
    # The poison is written by a producer allowed bigger records than the
    # projector accepts: another client, or a limit lowered later.
    with EventProducer(settings.with_(max_event_bytes=MAX_EVENT_BYTES * 4)) as producer:
        for round_ in range(2):
            for session_id in SESSIONS:
                before = [message_event(session_id, f"{session_id}#{round_}a")]
                ledger.record(before, producer.publish(before))
                poison = _poison(session_id)
                records = [EncodedEvent(k, v or b"", headers) for k, v, _ in poison.values()]
                if round_ == 0:  # a real tombstone once: the value is None, not b""
                    records[1] = EncodedEvent(records[1].key, None, headers)  # type: ignore[arg-type]
                positions = producer.send_encoded(settings.topic, records)
                for (kind, (_, _, reason)), position in zip(poison.items(), positions, strict=True):
                    expected[(position.partition, position.offset)] = (kind, reason)
                after = [message_event(session_id, f"{session_id}#{round_}b")]
                ledger.record(after, producer.publish(after))
    letters = _wait_dead_letters(settings, len(expected))
    wait_caught_up(redis_client, settings.namespace, ledger)
    found: dict[tuple[int, int], dict[str, bytes]] = {}
    for letter in letters:
        head = {k: bytes(v) for k, v in letter.headers}
        assert head[HEADER_TOPIC] == settings.topic.encode()
        coordinates = (int(head[HEADER_PARTITION]), int(head[HEADER_OFFSET]))
        assert coordinates not in found, f"{coordinates} dead-lettered twice"
        found[coordinates] = head
        kind, reason = expected[coordinates]
        assert reason in head[HEADER_REASON].decode(), (kind, head[HEADER_REASON])
        if kind == "over-size-beyond-dlq-limit":
            assert letter.value in (b"", None) and int(head[HEADER_VALUE_OMITTED]) > 0
    assert set(found) == set(expected)
    figures = reconcile(
        "poison-records",
        redis_client,
        settings.namespace,
        ledger,
        poison_injected=len(expected),
        dead_lettered=len(letters),
        poison_kinds=len(_poison("x")),
        projector_dead_lettered=projector.stats.dead_lettered,
    )
    figures.assert_exact()
    assert figures.applied == figures.acknowledged == 4 * len(SESSIONS)
