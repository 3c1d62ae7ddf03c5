"""The producer transports, one suite run on each Kafka client: same partitions, acks and errors."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest

from chatlog.errors import BrokerUnavailableError, MessageTooLargeError, PublishError
from chatlog.producers.admin import ensure_topic
from chatlog.producers.confluent_transport import ConfluentTransport
from chatlog.producers.kafka_python_transport import KafkaPythonTransport
from chatlog.producers.producer import EventProducer, LogPosition
from chatlog.schemas.codec import EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings
from tests.helpers import read_topic, unique


def _events(session_id: str, count: int, size: int = 20) -> list[ChatEvent]:
    return [
        ChatEvent(session_id, MessageAppended("human", f"{n:04d}" + "x" * size))
        for n in range(count)
    ]


def _on_topic(settings: Settings) -> Settings:
    """``settings``, with its topic created at its partition count (not the broker's default)."""
    ensure_topic(settings.topic, settings.partitions, settings.replication_factor,
                 settings=settings)
    return settings


def _records_at(settings: Settings) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    return {
        (r.partition, r.offset): (bytes(r.key), bytes(r.value))
        for r in read_topic(settings, settings.topic)
    }


def test_the_settings_choose_the_transport(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """CHATLOG_TRANSPORT puts the producer, not only the projector, on the chosen client."""
    expected = {"kafka-python": KafkaPythonTransport, "confluent": ConfluentTransport}
    with EventProducer(settings_factory(transport=kafka_client)) as producer:
        assert isinstance(producer.transport, expected[kafka_client])


def test_a_session_lands_on_the_partition_kafka_python_picks(
    settings_factory: Callable[..., Settings],
) -> None:
    """Both transports may write one topic: murmur2 keeps every session on one partition."""
    settings = _on_topic(settings_factory(partitions=7))
    sessions = [unique(f"key{n}") for n in range(120)]
    with EventProducer(settings) as default, EventProducer(
        settings.with_(transport="confluent")
    ) as confluent:
        by_default = [default.publish(_events(s, 1))[0].partition for s in sessions]
        by_confluent = [confluent.publish(_events(s, 1))[0].partition for s in sessions]
    assert by_confluent == by_default
    assert len(set(by_default)) == 7


def test_positions_point_at_the_records_written_in_order(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """A publish returns, in order, the partition and offset where each event was stored."""
    settings = _on_topic(settings_factory(transport=kafka_client, partitions=3))
    session = unique("s")
    with EventProducer(settings) as producer:
        events = _events(session, 40)
        positions = producer.publish(events)
        stored = _records_at(settings)
        assert len({p.partition for p in positions}) == 1
        assert [p.offset for p in positions] == sorted(p.offset for p in positions)
        for event, position in zip(events, positions, strict=True):
            key, value = stored[(position.partition, position.offset)]
            assert key == session.encode()
            assert producer.codec.decode(value) == event


def test_concurrent_publishes_each_get_their_own_acknowledgements(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """Threads sharing one producer: every event acknowledged once, each session in its order."""
    settings = _on_topic(settings_factory(transport=kafka_client, partitions=4))
    results: dict[str, list[LogPosition]] = {}
    errors: list[BaseException] = []
    with EventProducer(settings) as producer:

        def write(session: str) -> None:
            try:
                got: list[LogPosition] = []
                for n in range(25):
                    got += producer.publish(
                        [ChatEvent(session, MessageAppended("human", f"{session}#{n}"))]
                    )
                results[session] = got
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(unique("t"),)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors
    assert len(results) == 8
    every = [p for positions in results.values() for p in positions]
    assert len(set(every)) == 8 * 25
    stored = _records_at(settings)
    codec = EventCodec()
    for session, positions in results.items():
        texts = []
        for position in positions:
            event = codec.decode(stored[position][1])
            assert isinstance(event.payload, MessageAppended)
            texts.append(event.payload.content)
        assert texts == [f"{session}#{n}" for n in range(25)]


def test_async_publish_awaits_the_acknowledgements(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """An async publish resolves on the event loop with in-order positions."""
    settings = _on_topic(settings_factory(transport=kafka_client, partitions=2))
    session = unique("a")
    with EventProducer(settings) as producer:

        async def run() -> list[LogPosition]:
            first = await producer.apublish(_events(session, 5))
            second = await producer.apublish(_events(session, 5))
            return first + second

        positions = asyncio.run(run())
    assert len(positions) == 10
    assert [p.offset for p in positions] == list(
        range(positions[0].offset, positions[0].offset + 10)
    )


def test_an_oversized_event_is_refused_before_anything_is_sent(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """The size check runs before the first send, so a bad event publishes nothing."""
    settings = _on_topic(
        settings_factory(transport=kafka_client, partitions=1, max_event_bytes=2048)
    )
    session = unique("big")
    with EventProducer(settings) as producer:
        producer.publish(_events(session, 1))
        before = len(read_topic(settings, settings.topic))
        with pytest.raises(MessageTooLargeError):
            producer.publish(_events(session, 1) + _events(session, 1, size=4096))
        assert len(read_topic(settings, settings.topic)) == before


def _unreachable(settings_factory: Callable[..., Settings], **overrides: object) -> Settings:
    """Settings whose bootstrap address has nothing listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return settings_factory(
        kafka_bootstrap_servers=f"127.0.0.1:{port}", publish_timeout_s=1.5, **overrides
    )


def test_an_unreachable_broker_fails_typed(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """Nothing listens: the first publish fails with BrokerUnavailableError, not a hang.

    kafka-python already fails when the producer bootstraps; librdkafka when its
    records time out. A hang would be caught by the suite's per-test timeout.
    """
    settings = _unreachable(settings_factory, transport=kafka_client)
    with pytest.raises(BrokerUnavailableError), EventProducer(settings) as producer:
        producer.publish(_events(unique("down"), 2))


def test_librdkafka_reports_its_own_timeout_verdict(
    settings_factory: Callable[..., Settings],
) -> None:
    """On confluent-kafka the error carries librdkafka's verdict at the publish timeout.

    That is the records' message timeout, set from CHATLOG_PUBLISH_TIMEOUT, not the
    transport's longer fallback wait; sync and async alike, and close still works.
    """
    producer = EventProducer(_unreachable(settings_factory, transport="confluent"))
    with pytest.raises(BrokerUnavailableError, match=r"CHATLOG_PUBLISH_TIMEOUT.*timed out"):
        producer.publish(_events(unique("down"), 2))
    with pytest.raises(BrokerUnavailableError, match=r"CHATLOG_PUBLISH_TIMEOUT.*timed out"):
        asyncio.run(producer.apublish(_events(unique("down"), 1)))
    producer.close(timeout_s=1.0)
    with pytest.raises(PublishError, match="closed"):
        producer.publish(_events(unique("down"), 1))


def test_a_closed_producer_refuses_to_publish(
    kafka_client: str, settings_factory: Callable[..., Settings]
) -> None:
    """After close, a publish is a PublishError rather than a record that never leaves."""
    producer = EventProducer(settings_factory(transport=kafka_client))
    producer.publish(_events(unique("c"), 1))
    producer.close()
    producer.close()  # idempotent
    with pytest.raises(PublishError, match="closed"):
        producer.publish(_events(unique("c"), 1))
