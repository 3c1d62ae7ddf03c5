"""Topic administration: create the event topic safely and read its end offsets."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from chatlog.errors import BrokerUnavailableError, TopicError
from chatlog.producers.client_internals import GroupAdmin, fetched_high_watermarks
from chatlog.settings import Settings

#: The log is the source of truth: it is never truncated by time or size.
LOG_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def _admin(settings: Settings) -> KafkaAdminClient:
    # Bootstrap too is bounded by the publish timeout (kafka-python's own
    # default is 30 s), so an append in a process that starts during a
    # broker outage fails as fast as one in a connected process.
    return GroupAdmin.connect(
        settings, bootstrap_timeout_ms=int(settings.publish_timeout_s * 1000)
    )


def partition_count(settings: Settings, topic: str) -> int | None:
    """Number of partitions of ``topic``, or ``None`` when it does not exist."""
    consumer = _consumer(settings)
    try:
        partitions = _partitions(consumer, topic, 1.0)
    except KafkaError as exc:
        raise TopicError(f"cannot read metadata of topic {topic!r}: {exc}") from exc
    finally:
        consumer.close()
    return None if not partitions else len(partitions)


def topic_exists(settings: Settings, topic: str) -> bool:
    """Whether the broker lists ``topic`` (one metadata request for every topic).

    Raises:
        TopicError: the broker's metadata cannot be read.
        BrokerUnavailableError: no broker answered.
    """
    admin = _admin(settings)
    try:
        return topic in admin.list_topics()
    except KafkaError as exc:
        raise TopicError(f"cannot list the broker's topics: {exc}") from exc
    finally:
        admin.close()


def ensure_topic(
    name: str,
    partitions: int = 12,
    replication_factor: int = 1,
    *,
    settings: Settings,
    config: dict[str, str] | None = None,
) -> int:
    """Create ``name`` with unlimited retention unless it exists; return its partition count.

    ``config`` replaces the topic configuration (default :data:`LOG_TOPIC_CONFIG`;
    the compacted key store has its own).

    An existing topic is never altered: adding partitions to a live topic moves
    session keys to other partitions and breaks per-session ordering, so that
    is left to an explicit, planned migration (rebuild into a new topic).
    """
    admin = _admin(settings)
    try:
        admin.create_topics(
            [
                NewTopic(
                    name,
                    partitions,
                    replication_factor,
                    topic_configs=LOG_TOPIC_CONFIG if config is None else config,
                )
            ]
        )
    except TopicAlreadyExistsError:
        pass
    except KafkaError as exc:
        raise TopicError(f"cannot create topic {name!r}: {exc}") from exc
    finally:
        admin.close()
    # Metadata propagates asynchronously after CreateTopics; wait for it so
    # the first send does not block on an unknown topic.
    count = None
    for _ in range(30):
        count = partition_count(settings, name)
        if count:
            break
    if not count:
        raise TopicError(f"topic {name!r} was created but its metadata never appeared")
    return count


def end_offsets(
    settings: Settings,
    topic: str,
    partitions: Iterable[int] | None = None,
    *,
    missing_ok: bool = False,
) -> dict[int, int]:
    """The offset after the last record of each partition (the high watermark).

    With ``missing_ok``, a topic the broker does not list (the checkpoint
    topic of a deployment that never used the saver) gives ``{}`` at once;
    otherwise the partitions are looked up for up to the publish timeout,
    since a topic's metadata can lag its creation.

    Some Kafka-compatible brokers (the embedded Tansu among them) answer
    ListOffsets with the base offset of the last record batch plus one rather
    than the true end, so the answer is checked against the high watermark
    that a fetch reports (:func:`~chatlog.producers.client_internals.fetched_high_watermarks`),
    and the larger value wins.
    """
    if missing_ok and partitions is None and not topic_exists(settings, topic):
        return {}
    consumer = _consumer(settings)
    try:
        if partitions is None:
            partitions = sorted(_partitions(consumer, topic, settings.publish_timeout_s))
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return {}
        listed = consumer.end_offsets(tps)
        fetched, pending = fetched_high_watermarks(
            consumer, {tp: listed[tp] for tp in tps}, settings.publish_timeout_s
        )
        result = {tp.partition: max(listed[tp], fetched.get(tp, 0)) for tp in tps}
        if pending:
            raise TopicError(
                f"no high watermark for {sorted(tp.partition for tp in pending)} of {topic!r} "
                f"within {settings.publish_timeout_s:g}s"
            )
        return result
    except KafkaError as exc:
        raise TopicError(f"cannot read end offsets of {topic!r}: {exc}") from exc
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topic: str, timeout_s: float) -> set[int]:
    """Partition ids of ``topic``; retried because a metadata refresh can come back empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: set[int] = set(consumer.partitions_for_topic(topic) or ())
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _consumer(settings: Settings) -> KafkaConsumer:
    try:
        return KafkaConsumer(
            **settings.kafka_client_options(),
            enable_auto_commit=False,
            request_timeout_ms=int(settings.publish_timeout_s * 1000),
            bootstrap_timeout_ms=int(settings.publish_timeout_s * 1000),
        )
    except KafkaTimeoutError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {settings.kafka_bootstrap_servers}; "
            "check KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
