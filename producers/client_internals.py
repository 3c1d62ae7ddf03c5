"""Every place chatlog reaches past a Kafka client's public API, or works around a broker.

Checked against kafka-python 3.0.x (3.0.12) and confluent-kafka 2.x (2.16.1 on
librdkafka 2.16.0). Nothing else in chatlog touches a client's private
attributes or methods, so after upgrading either client, this module (and the
fault and transport tests that exercise it) is what to re-check:

- kafka-python's producer has no public force-close: :func:`force_close_producer`
  reaches its sender thread.
- kafka-python 3.0's ``describe_consumer_groups`` fails on brokers that report
  every ACL bit: :class:`GroupAdmin` overrides two private methods.
- Some brokers (the embedded Tansu) answer ListOffsets with less than the
  true end: :func:`fetched_high_watermarks` asks a fetch instead.
- librdkafka reports client-side conditions as underscore-named error codes
  (``_MSG_TIMED_OUT``, ``_PARTITION_EOF``, ...), and its producer gained
  ``close`` only in confluent-kafka 2.6: the code sets and
  :func:`release_confluent_producer` below.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.base import MemberState
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.protocol.admin import DescribeGroupsRequest

from chatlog.errors import BrokerUnavailableError, ChatLogError
from chatlog.settings import Settings

try:
    import confluent_kafka
except ImportError:  # pragma: no cover - depends on the installed extras
    confluent_kafka = None  # type: ignore[assignment]


# -- kafka-python ---------------------------------------------------------------


def force_close_producer(producer: KafkaProducer) -> None:
    """Close ``producer`` at once, failing whatever it still holds.

    ``KafkaProducer.close`` flushes first and raises if it cannot; kafka-python
    has no public force-close, so its sender is force-closed (it fails the
    pending batches' futures) before the close.
    """
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
    producer.close(timeout=5)


class GroupAdmin(KafkaAdminClient):  # type: ignore[misc]
    """An admin client whose DescribeGroups works against brokers with odd ACL answers.

    kafka-python 3.0 always asks DescribeGroups for the authorized operations
    (ignoring ``include_authorized_operations=False``) and converts the bit
    set into ``ACLOperation`` values, which raises ``ValueError: 15 is not a
    valid ACLOperation`` when a broker such as Tansu answers with every bit
    set. chatlog needs no ACL information, so it does not ask and drops
    whatever comes back.
    """

    @classmethod
    def connect(cls, settings: Settings, **options: Any) -> GroupAdmin:
        """An admin client on ``settings``' brokers, with kafka-python ``options`` added.

        Raises:
            BrokerUnavailableError: no broker answered.
            ChatLogError: the client could not be created.
        """
        try:
            return cls(
                **settings.kafka_client_options(),
                request_timeout_ms=int(settings.publish_timeout_s * 1000),
                **options,
            )
        except KafkaTimeoutError as exc:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {settings.kafka_bootstrap_servers}; "
                "check KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        except KafkaError as exc:
            raise ChatLogError(f"cannot open a Kafka admin client: {exc}") from exc

    def _describe_groups_request(self, group_ids: list[str]) -> Any:
        return DescribeGroupsRequest(groups=list(group_ids), include_authorized_operations=False)

    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.pop("authorized_operations", None)
        return obj


def group_rebalancing(consumer: Any) -> bool:
    """Whether a kafka-python consumer's group membership is being negotiated.

    kafka-python 3 runs a JoinGroup/SyncGroup attempt as a task that only a
    poll awaits; an attempt that completes while no poll is waiting is
    dropped, and the next poll sends a new JoinGroup. A worker that polls
    with a 1 ms wait and spends the rest of its idle step on the wake-up
    channel then rejoins for ever whenever the broker answers SyncGroup
    late (Tansu answers a follower's after up to seconds): seen as a group
    that never settles after a member is killed. While this holds, the
    worker polls with its plain wait. A confluent consumer has no such
    state here (librdkafka negotiates on its own threads): ``False``.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:
        return False
    return bool(coordinator.need_rejoin()) or coordinator.state is not MemberState.STABLE


def fetched_high_watermarks(
    consumer: KafkaConsumer,
    listed: dict[TopicPartition, int],
    timeout_s: float,
) -> tuple[dict[TopicPartition, int], set[TopicPartition]]:
    """The high watermark a fetch reports for each non-empty partition of ``listed``.

    Some Kafka-compatible brokers (the embedded Tansu among them) answer
    ListOffsets with the base offset of the last record batch plus one rather
    than the true end; a fetch from the last listed offset reports the true
    one. Assigns ``consumer`` to those partitions. Returns the watermarks found
    within ``timeout_s`` and the partitions still without one.
    """
    pending = {tp for tp, offset in listed.items() if offset > 0}
    found: dict[TopicPartition, int] = {}
    consumer.assign(sorted(pending, key=lambda tp: tp.partition))
    for tp in pending:
        consumer.seek(tp, listed[tp] - 1)
    # The fetcher may serve one partition per response, so keep polling
    # until every partition has reported its high watermark.
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
        for tp in list(pending):
            high = consumer.highwater(tp)
            if high is not None:
                found[tp] = high
                pending.discard(tp)
                consumer.pause(tp)
    return found, pending


# -- confluent-kafka / librdkafka ---------------------------------------------------


def _codes(names: Iterable[str]) -> frozenset[int]:
    if confluent_kafka is None:
        return frozenset()
    return frozenset(
        getattr(confluent_kafka.KafkaError, name)
        for name in names
        if hasattr(confluent_kafka.KafkaError, name)
    )


#: Broker refusals for producer-state reasons (after an outage the idempotent
#: producer's epoch bump can be fenced): the refused records were not written.
REFUSED_UNWRITTEN = _codes((
    "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "UNKNOWN_PRODUCER_ID", "_FENCED",
))

#: Refusals of a record for its size, by librdkafka or the broker: permanent.
TOO_LARGE = _codes(("MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"))

#: Delivery errors that mean "no acknowledgement in time".
TIMEOUTS = _codes(("_MSG_TIMED_OUT", "_TIMED_OUT"))

#: The topic (or partition) does not exist, as the client or the broker says it.
UNKNOWN_TOPIC = _codes(("_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_OR_PART"))

#: Not an error: the consumer reached the end of a partition.
PARTITION_EOF = _codes(("_PARTITION_EOF",))

#: Commit failures that mean "the group moved on": the commit is skipped and
#: the next owner of the partition redelivers, as with kafka-python.
REBALANCE = _codes((
    "REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID",
    "_ASSIGNMENT_LOST", "_STATE",
))


def release_confluent_producer(producer: Any) -> None:
    """Fail whatever ``producer`` still holds and release it."""
    producer.purge()
    producer.poll(0)  # serves the purged records' delivery reports: their publishes fail
    close = getattr(producer, "close", None)  # confluent-kafka >= 2.6
    if close is not None:
        close()
