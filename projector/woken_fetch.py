"""The fetch a wake-up triggers: the named partitions, from the projector's own position.

The group consumer's fetch may be held by the broker for its whole wait
(the embedded Tansu does that even when records arrive, and kafka-python
and librdkafka both keep one fetch in flight per broker connection), so
interrupting its poll would not bring the records sooner (kafka-python 3
has no public way to interrupt a poll; confluent-kafka none at all). A woken worker
reads instead with a second consumer of its own: no group (it joins
nothing, commits nothing), a minimal fetch wait, assigned only the woken
partitions and sought to the group consumer's positions. What it returns
starts exactly at those positions, so it is the very batch the group
consumer would have returned next; the worker applies it through the same
path and then seeks the group consumer past it (both clients discard an
in-flight fetch whose offset no longer matches the position).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from chatlog.settings import Settings

#: Longest a woken fetch waits for the named offsets. They are acknowledged, so
#: a healthy broker returns them in one round trip; a woken fetch that comes
#: back short leaves the rest to the next wake-up or the fetch cycle.
WOKEN_FETCH_MS = 100

#: The woken fetch's wait. The wake-up says the records are there, so the
#: broker can answer at once; not 0: the embedded Tansu answers a fetch with
#: a zero wait with no records at all (measured with kafka-python: nothing in
#: 1 s of polls at 0; the record in 2-6 ms at 1, 5 or 20).
WOKEN_FETCH_MAX_WAIT_MS = 1

#: Partition -> (first offset to read, offset that must be read).
Wanted = dict[TopicPartition, tuple[int, int]]


class WokenFetch(Protocol):
    """Reads woken partitions from given positions (one implementation per transport)."""

    def read(self, wanted: Wanted, max_records: int) -> dict[TopicPartition, list[Any]]:
        """Records of each wanted partition from its first offset on, at most ``max_records``.

        Raises:
            KafkaError: the fetch failed (the worker leaves it to the fetch cycle).
        """

    def close(self) -> None:
        """Release the connection."""


def open_woken_fetch(settings: Settings) -> WokenFetch:
    """The woken-fetch reader of ``settings.transport``."""
    if settings.transport == "confluent":
        return ConfluentWokenFetch(settings)
    return KafkaPythonWokenFetch(settings)


def _reached(got: dict[TopicPartition, list[Any]], wanted: Wanted) -> bool:
    return all(
        tp in got and got[tp][-1].offset >= needed for tp, (_, needed) in wanted.items()
    )


class KafkaPythonWokenFetch:
    """:class:`WokenFetch` on a group-less kafka-python consumer."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = KafkaConsumer(
            **settings.kafka_client_options(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=WOKEN_FETCH_MAX_WAIT_MS,
            max_poll_records=settings.max_poll_records,
        )

    def read(self, wanted: Wanted, max_records: int) -> dict[TopicPartition, list[Any]]:
        """See :meth:`WokenFetch.read`."""
        consumer = self._consumer
        consumer.assign(list(wanted))
        for tp, (start, _) in wanted.items():
            consumer.seek(tp, start)
        got: dict[TopicPartition, list[Any]] = {}
        count = 0
        deadline = time.monotonic() + WOKEN_FETCH_MS / 1000
        while count < max_records and not _reached(got, wanted):
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            for tp, raws in consumer.poll(
                timeout_ms=left_ms, max_records=max_records - count
            ).items():
                got.setdefault(tp, []).extend(raws)
                count += len(raws)
        return got

    def close(self) -> None:
        """See :meth:`WokenFetch.close`."""
        self._consumer.close(autocommit=False)


class ConfluentWokenFetch:
    """:class:`WokenFetch` on a confluent-kafka consumer that never joins its group."""

    def __init__(self, settings: Settings) -> None:
        import confluent_kafka

        from chatlog.producers.librdkafka import client_config, require_confluent_kafka

        require_confluent_kafka()
        self._kafka = confluent_kafka
        self._consumer = confluent_kafka.Consumer({
            **client_config(settings),
            # librdkafka wants a group id even for assign(); it joins nothing
            # and, with auto commit off, commits nothing.
            "group.id": f"{settings.consumer_group}.woken",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": WOKEN_FETCH_MAX_WAIT_MS,
        })
        self._assigned: set[tuple[str, int]] = set()

    def read(self, wanted: Wanted, max_records: int) -> dict[TopicPartition, list[Any]]:
        """See :meth:`WokenFetch.read`.

        A partition read once stays assigned, paused between reads: a seek
        and a resume start its fetch sooner than a new assignment does
        (p50 1.4 ms against 2.2 ms on the embedded broker).
        """
        from chatlog.producers.confluent_consumer import grouped_records

        kafka = self._kafka
        consumer = self._consumer
        targets = [kafka.TopicPartition(tp.topic, tp.partition, start)
                   for tp, (start, _) in wanted.items()]
        try:
            new = [t for t in targets if (t.topic, t.partition) not in self._assigned]
            if new:
                consumer.incremental_assign(new)
                self._assigned.update((t.topic, t.partition) for t in new)
            known = [t for t in targets if t not in new]
            if known:
                consumer.resume(known)
                for target in known:
                    consumer.seek(target)
            got: dict[TopicPartition, list[Any]] = {}
            count = 0
            deadline = time.monotonic() + WOKEN_FETCH_MS / 1000
            while count < max_records and not _reached(got, wanted):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # consume() would wait for a full batch or the timeout; poll()
                # returns at the first record, then consume(0) takes the rest.
                first = consumer.poll(left)
                if first is None:
                    continue
                rest = max_records - count - 1
                messages = [first, *(consumer.consume(rest, 0) if rest > 0 else [])]
                for tp, raws in grouped_records(messages).items():
                    if tp not in wanted:
                        continue
                    # A record fetched before the seek took effect is not the next one.
                    expected = got[tp][-1].offset + 1 if tp in got else wanted[tp][0]
                    raws = [r for r in raws if r.offset >= expected]
                    if raws:
                        got.setdefault(tp, []).extend(raws)
                        count += len(raws)
            consumer.pause(targets)
            return got
        except kafka.KafkaException as exc:
            raise KafkaError(f"confluent-kafka woken fetch failed: {exc}") from exc

    def close(self) -> None:
        """See :meth:`WokenFetch.close`."""
        self._consumer.close()
