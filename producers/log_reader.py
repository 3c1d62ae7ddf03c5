"""Reading a bounded range of a topic, for replays: ``[starts[p], ends[p])`` of each partition.

Replays read with manual assignment (no consumer group, so the live
projector is never disturbed) up to end offsets captured when they start.
The chat replay and the checkpoint replay read the same way and differ only
in how a raw record is decoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from chatlog.errors import BrokerUnavailableError, ReplayError, TopicError
from chatlog.producers.admin import end_offsets
from chatlog.settings import Settings

#: A partition that yields nothing for this long while short of its end is an error.
STALL_S = 30.0
#: How long one poll may wait. kafka-python 3 sometimes finds no fetch in
#: flight between two responses and then sleeps the whole poll timeout (up to
#: its retry backoff, 100 ms) instead of fetching; on the embedded broker that
#: was a quarter of a rebuild's time at a 500 ms timeout. A few milliseconds
#: cost an idle reader nothing worth counting (rebuild 25k -> 33k events/s).
POLL_MS = 5
#: How long a replay's start may read to check where partitions said to begin
#: past 0 really begin (one fetch each).
VERIFY_BEGINNING_S = 5.0

Record = TypeVar("Record")


class RangeProgress(Protocol):
    """The counters a range read keeps up to date (``ReplayProgress`` has them)."""

    total: int
    done: int
    undecodable: int
    partitions_total: int
    partitions_done: int


def beginning_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    """The first offset still in the log of each of ``partitions``.

    A replay starts there, so an answer too high would leave records out for
    good. The embedded broker (Tansu) answered ``ListOffsets(earliest)`` with 1
    and 8 for partitions whose records from 0 were in the log (writers racing
    on a new topic), so a partition said to begin past 0 is read from 0
    instead: a broker that really deleted the head answers that fetch with
    ``OFFSET_OUT_OF_RANGE`` and the consumer resets to its earliest offset.
    """
    consumer = KafkaConsumer(
        **settings.kafka_client_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        found = {tp.partition: offset for tp, offset in consumer.beginning_offsets(tps).items()}
        later = [tp for tp in tps if found[tp.partition] > 0]
        if later:
            # An empty partition (everything deleted) has nothing to fetch: not checked.
            ends = end_offsets(settings, topic, [tp.partition for tp in later])
            later = [tp for tp in later if found[tp.partition] < ends[tp.partition]]
        if later:
            for tp, first in _first_offsets(consumer, later).items():
                found[tp.partition] = min(found[tp.partition], first)
    except KafkaError as exc:
        raise TopicError(f"cannot read where {topic!r} begins: {exc}") from exc
    finally:
        consumer.close()
    return found


def _first_offsets(consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset of the first record a fetch from 0 returns, per partition that has one."""
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    first: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + VERIFY_BEGINNING_S
    while len(first) < len(tps) and time.monotonic() < deadline:
        for tp, raws in consumer.poll(timeout_ms=POLL_MS).items():
            if raws and tp not in first:
                first[tp] = raws[0].offset
                consumer.pause(tp)
    return first


def read_range(
    settings: Settings,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    progress: RangeProgress,
    decode: Callable[[Any], Record | None],
    *,
    as_of_ms: int | None = None,
    key: bytes | None = None,
) -> Iterator[tuple[list[Record], dict[int, int]]]:
    """Yield each polled batch's decoded records and the partitions' next offsets.

    Reads ``[starts[p], ends[p])`` of every partition of ``ends`` (stopping a
    partition early at its first record at or after ``as_of_ms``). ``decode``
    turns a raw record into a record, or ``None`` for one the live projector
    would dead-letter (counted as undecodable); with ``key``, only that key's
    records are decoded.

    Raises:
        BrokerUnavailableError: no broker answered.
        ReplayError: a partition stalled short of its captured end.
        TopicError: the broker failed the read.
    """
    pending = {p: TopicPartition(topic, p) for p in ends if starts.get(p, 0) < ends[p]}
    progress.total += sum(max(ends[p] - starts.get(p, 0), 0) for p in ends)
    progress.partitions_total = len(ends)
    progress.partitions_done = len(ends) - len(pending)
    if not pending:
        return
    try:
        consumer = KafkaConsumer(
            **settings.kafka_client_options(),
            enable_auto_commit=False,
            max_poll_records=settings.max_poll_records,
            fetch_max_wait_ms=100,
        )
    except KafkaTimeoutError as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {settings.kafka_bootstrap_servers}"
        ) from exc
    try:
        consumer.assign(list(pending.values()))
        for p, tp in pending.items():
            consumer.seek(tp, starts[p])
        last_progress = time.monotonic()
        while pending:
            batch = consumer.poll(timeout_ms=POLL_MS)
            records: list[Record] = []
            next_offsets: dict[int, int] = {}
            for tp, raws in batch.items():
                p = tp.partition
                if p not in pending:
                    continue
                taken = _within(raws, ends[p], as_of_ms)
                finished = len(taken) < len(raws)
                if taken:
                    progress.done += len(taken)
                    next_offsets[p] = taken[-1].offset + 1
                if key is not None:
                    taken = [raw for raw in taken if raw.key == key]
                for raw in taken:
                    record = decode(raw)
                    if record is None:
                        progress.undecodable += 1
                    else:
                        records.append(record)
                if finished or consumer.position(tp) >= ends[p]:
                    next_offsets[p] = ends[p] if not finished else next_offsets.get(p, starts[p])
                    consumer.pause(tp)
                    del pending[p]
                    progress.partitions_done += 1
            if next_offsets:
                last_progress = time.monotonic()
                yield records, next_offsets
            elif time.monotonic() - last_progress > STALL_S:
                stuck = {p: consumer.position(tp) for p, tp in pending.items()}
                raise ReplayError(
                    f"partitions {stuck} of {topic!r} yielded nothing for {STALL_S:g}s short "
                    f"of their captured ends {ends}; check the broker"
                )
    except KafkaError as exc:
        raise TopicError(f"replaying {topic!r} failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)


def _within(raws: list[Any], end: int, as_of_ms: int | None) -> list[Any]:
    """The leading records of ``raws`` before ``end`` and before ``as_of_ms``."""
    if as_of_ms is None and raws[-1].offset < end:
        return raws  # the usual batch: all of it (offsets only grow)
    for index, raw in enumerate(raws):
        if raw.offset >= end or (as_of_ms is not None and raw.timestamp >= as_of_ms):
            return raws[:index]
    return raws
