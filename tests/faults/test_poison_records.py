"""Poison records in the topic go to the dead-letter topic; the events around them are applied."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from chatlog.errors import RecordTooLargeError
from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.producers.producer import EncodedEvent, EventProducer
from chatlog.projector import Projector
from chatlog.projector.dead_letter import (
    HEADER_HEADERS_TRUNCATED,
    HEADER_KEY_SHA256,
    HEADER_KEY_TRUNCATED,
    HEADER_LETTER,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
    HEADER_VALUE_OMITTED,
    HEADERS_LIMIT,
    KEY_LIMIT,
    REASON_LIMIT,
    DeadLetter,
    DeadLetterQueue,
)
from chatlog.schemas.codec import CONTENT_TYPE, MAGIC, EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings
from tests.faults.ledger import Ledger, message_event, reconcile, wait_caught_up
from tests.fixtures.raw_record import RawRecord
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
            stub = json.loads(letter.value)
            assert head[HEADER_LETTER] == b"stub" and int(head[HEADER_VALUE_OMITTED]) > 0
            assert stub["value_bytes"] == int(head[HEADER_VALUE_OMITTED])
            assert (stub["partition"], stub["offset"]) == coordinates
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
    assert len(letters) == len(expected) == projector.stats.dead_lettered, figures.line()
    assert {kind for kind, _ in expected.values()} == set(_poison("x")), figures.line()


MIB = 1024 * 1024


def test_records_with_huge_keys_and_headers_are_dead_lettered_bounded_and_the_partition_goes_on(
    settings_factory: Callable[..., Settings],
    projector_factory: Callable[..., Projector],
    redis_client: redis.Redis,
) -> None:
    """A 2 MiB key, 4 MiB of headers and both with an over-size value: bounded letters, no stop.

    The letter copied key and headers, so the producer refused it as too large
    and the size error was retried forever: the partition stopped.
    """
    settings = settings_factory(max_event_bytes=MAX_EVENT_BYTES, partitions=1)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    projector = projector_factory(settings)
    session_id = "bounded-letters"
    codec = EventCodec()
    event = codec.encode(ChatEvent(session_id, MessageAppended(type="human", content="k")))
    huge_key = b"k" * (2 * MIB)
    huge_headers = [(f"h{n}", os.urandom(100 * 1024)) for n in range(40)]
    over_size = os.urandom(MAX_EVENT_BYTES * 2)
    poison = {
        "huge-key": EncodedEvent(huge_key, event, [("event-type", b"MessageAppended")]),
        "huge-headers": EncodedEvent(session_id.encode(), os.urandom(300), huge_headers),
        "huge-everything": EncodedEvent(huge_key, over_size, huge_headers),
    }
    ledger = Ledger()
    # The poison is written by a client allowed far bigger records (the
    # embedded broker takes them: it has no message.max.bytes).
    with EventProducer(settings.with_(max_event_bytes=8 * MIB)) as producer:
        positions = producer.send_encoded(settings.topic, list(poison.values()))
        after = [message_event(session_id, f"after-{n}") for n in range(3)]
        ledger.record(after, producer.publish(after))
    assert {p.partition for p in positions} == {0}
    letters = _wait_dead_letters(settings, len(poison))
    wait_caught_up(redis_client, settings.namespace, ledger)
    by_offset = {int(dict(x.headers)[HEADER_OFFSET]): x for x in letters}
    assert sorted(by_offset) == [p.offset for p in positions]
    key_letter, headers_letter, stub_letter = (by_offset[p.offset] for p in positions)

    head = {k: bytes(v) for k, v in key_letter.headers}
    assert len(key_letter.key) == KEY_LIMIT and key_letter.value == event
    assert int(head[HEADER_KEY_TRUNCATED]) == len(huge_key)
    assert head[HEADER_KEY_SHA256] == hashlib.sha256(huge_key).hexdigest().encode()
    reason = head[HEADER_REASON].decode()
    assert len(head[HEADER_REASON]) <= REASON_LIMIT, len(head[HEADER_REASON])
    assert reason.endswith("is not the session id 'bounded-letters'"), reason[-80:]

    head = {k: bytes(v) for k, v in headers_letter.headers}
    assert headers_letter.value == poison["huge-headers"].value
    kept = [(k, v) for k, v in headers_letter.headers if not k.startswith("dlq-")]
    assert 0 < sum(len(k) + len(v) for k, v in kept) <= HEADERS_LIMIT
    assert int(head[HEADER_HEADERS_TRUNCATED]) == sum(len(k) + len(v) for k, v in huge_headers)

    head = {k: bytes(v) for k, v in stub_letter.headers}
    stub = json.loads(stub_letter.value)
    assert head[HEADER_LETTER] == b"stub" and int(head[HEADER_VALUE_OMITTED]) == len(over_size)
    assert stub["value_sha256"] == hashlib.sha256(over_size).hexdigest()
    assert stub["key_sha256"] == hashlib.sha256(huge_key).hexdigest()
    assert (stub["key_bytes"], stub["value_bytes"]) == (len(huge_key), len(over_size))
    assert (stub["topic"], stub["partition"], stub["offset"]) == (
        settings.topic, 0, positions[2].offset
    )
    assert stub["reason"].startswith("over-size")
    figures = reconcile(
        "bounded-dead-letters",
        redis_client,
        settings.namespace,
        ledger,
        poison_injected=len(poison),
        dead_lettered=len(letters),
        projector_dead_lettered=projector.stats.dead_lettered,
        projector_retries=projector.stats.retries,
    )
    figures.assert_exact()
    assert figures.applied == figures.acknowledged == len(after)
    assert len(letters) == len(poison) == projector.stats.dead_lettered, figures.line()
    assert projector.stats.retries == 0  # no size refusal was ever retried


def test_a_letter_the_broker_refuses_as_too_large_is_sent_as_a_stub_never_retried(
    settings_factory: Callable[..., Settings],
) -> None:
    """A broker limit below the producer's: the refused letter becomes a stub at once.

    The producer here takes less than the queue puts in a letter, as a broker
    whose ``message.max.bytes`` is below ``CHATLOG_MAX_EVENT_BYTES`` does.
    """
    settings = settings_factory(max_event_bytes=16 * 1024, partitions=1)
    ensure_topic(settings.dlq_topic, 1, settings=settings)
    records = [
        RawRecord(settings.topic, 0, offset, b"s", value, [("event-type", b"MessageAppended")])
        for offset, value in enumerate([b"small", os.urandom(200 * 1024), b"small too"])
    ]
    with EventProducer(settings) as producer:
        queue = DeadLetterQueue(producer, settings.dlq_topic, max_value_bytes=MIB)
        queue.publish([DeadLetter(record, "undecodable: test") for record in records])
    letters = read_topic(settings, settings.dlq_topic)
    by_offset: dict[int, list[Any]] = {}
    for letter in letters:
        by_offset.setdefault(int(dict(letter.headers)[HEADER_OFFSET]), []).append(letter)
    assert sorted(by_offset) == [0, 1, 2]
    assert [x.value for x in by_offset[2]] == [b"small too"]
    (stub,) = by_offset[1]
    assert dict(stub.headers)[HEADER_LETTER] == b"stub"
    assert json.loads(stub.value)["value_sha256"] == hashlib.sha256(records[1].value).hexdigest()
    # Acknowledged before the refusal, then sent again letter by letter.
    assert {x.value for x in by_offset[0]} == {b"small"} and len(by_offset[0]) <= 2
    assert queue.refused == 0


@pytest.mark.parametrize("transport", ["kafka-python", "confluent"])
def test_a_record_over_the_request_limit_is_a_typed_permanent_refusal(
    settings_factory: Callable[..., Settings], transport: str
) -> None:
    """Both transports refuse an over-size record as RecordTooLargeError, the same producer goes on.

    The dead-letter queue tells a size refusal (never retried) from an outage
    (retried) by this type.
    """
    settings = settings_factory(max_event_bytes=16 * 1024, partitions=1, transport=transport)
    ensure_topic(settings.dlq_topic, 1, settings=settings)
    with EventProducer(settings) as producer:
        with pytest.raises(RecordTooLargeError):
            producer.send_encoded(settings.dlq_topic, [EncodedEvent(b"k", b"x" * 200_000, [])])
        (position,) = producer.send_encoded(settings.dlq_topic, [EncodedEvent(b"k", b"ok", [])])
    assert position.partition == 0
