"""The event topic as a replay reads it: end offsets (now or as of a time), beginnings, ranges.

A replay reads partitions with manual assignment (no consumer group, so it
never disturbs the live projector) up to end offsets captured when it
starts, and sees each record as the live projector does: through the same
:class:`~chatlog.projector.change_reader.ChangeReader`, a refused record
being skipped (the live projector dead-letters it).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from chatlog.errors import TopicError
from chatlog.producers.admin import end_offsets
from chatlog.producers.key_store import key_store_of
from chatlog.producers.log_reader import beginning_offsets, read_range
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal
from chatlog.projector.replay_progress import ReplayProgress
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings


def millis(moment: datetime) -> int:
    """``moment`` as epoch milliseconds (the unit of Kafka timestamps)."""
    return int(moment.timestamp() * 1000)


class ReplayLog:
    """Reads ``settings.topic`` for replays.

    Args:
        settings: Connections, topic and the event size limit.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = EventCodec()
        # CHATLOG_ENCRYPTION_KEY: sealed messages are opened as the live projector
        # opens them; a shredded one (its data key destroyed) is skipped.
        self.key_store = key_store_of(settings)
        self.reader = ChangeReader(
            self.codec, settings.max_event_bytes, key_store=self.key_store
        )

    def read(
        self,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        *,
        as_of_ms: int | None = None,
        key: bytes | None = None,
    ) -> Iterator[tuple[list[Change], dict[int, int]]]:
        """Each polled batch's records of ``[starts, ends)`` and the partitions' next offsets."""
        if self.key_store is not None:
            # Every replay starts from the key store's end: a key destroyed since
            # this object's last replay (an erasure meanwhile) is shredded in this one.
            self.key_store.catch_up()
        return read_range(
            self.settings,
            self.settings.topic,
            starts,
            ends,
            progress,
            self.decode,
            as_of_ms=as_of_ms,
            key=key,
        )

    def decode(self, raw: Any) -> Change | None:
        """The record's change as the live projector sees it, or ``None`` if it dead-letters it."""
        change = self.reader.read(raw)
        return None if type(change) is Refusal else change  # type: ignore[return-value]

    def ends(self, as_of_ms: int | None) -> dict[int, int]:
        """Every partition's end offset now, or its first offset at or after ``as_of_ms``.

        Raises:
            TopicError: the topic is missing or cannot be read.
        """
        ends = end_offsets(self.settings, self.settings.topic)
        if not ends:
            raise TopicError(f"topic {self.settings.topic!r} does not exist")
        if as_of_ms is None:
            return ends
        consumer = KafkaConsumer(**self.settings.kafka_client_options(), enable_auto_commit=False)
        try:
            tps = [TopicPartition(self.settings.topic, p) for p in ends]
            found = consumer.offsets_for_times({tp: as_of_ms for tp in tps})
        except KafkaError as exc:
            raise TopicError(f"offsets_for_times on {self.settings.topic!r} failed: {exc}") from exc
        finally:
            consumer.close()
        for tp, hit in found.items():
            # No record at or after the time (some brokers answer timestamp -1
            # instead of nothing): the whole partition is older, keep its end.
            if hit is not None and hit.timestamp >= 0:
                ends[tp.partition] = min(ends[tp.partition], hit.offset)
        return ends

    def partition_end(self, partition: int) -> int:
        """One partition's end offset now."""
        return end_offsets(self.settings, self.settings.topic, [partition])[partition]

    def beginnings(self, ends: dict[int, int]) -> dict[int, int]:
        """The first offset still in the log of every partition of ``ends``."""
        return beginning_offsets(self.settings, self.settings.topic, list(ends))
