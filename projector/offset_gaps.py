"""Never apply past records the consumer did not deliver: offset gaps in the live stream.

The idempotent apply skips every event at or below a session's last applied
offset, so a record the consumer silently leaves out is lost for good once a
later record of its session is applied: the session holds messages
``[.., j-1, j+1, ..]`` with a matching count, and nothing detects it (issue
14). The embedded broker (Tansu, in-memory storage) was seen doing exactly
that under four concurrent producers: one poll of kafka-python 3 returned
offsets ``779..782, 790`` of a partition, and the seven records between were
in the log (a replay from the beginning read them) but never delivered to the
live consumer.

:class:`OffsetGaps` follows each partition's next expected offset. A batch
whose records of a partition skip offsets (within the poll or from the last
one) is cut before the first missing offset, and the consumer is sought back
there, so the next poll reads the missing records again. A gap that is really
in the log (offsets taken by transaction markers of a transactional producer,
or a compacted topic) comes back the same on every re-read: after
:data:`GAP_REREADS` identical answers it is accepted, logged at WARNING and
counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from kafka import TopicPartition

log = logging.getLogger("chatlog.projector")

#: Re-reads of one gap that answer with the same gap before it is taken as
#: part of the log (transaction markers, compaction) rather than records the
#: broker has not delivered yet.
GAP_REREADS = 5


class GapCounts(Protocol):
    """Where gaps are counted (:class:`~chatlog.projector.stats.ProjectorStats`, a target's)."""

    gaps_reread: int
    gaps_accepted: int


class OffsetGaps:
    """The next offset each partition must deliver, and the gaps being re-read.

    Args:
        stats: Where the gaps are counted (``gaps_reread``, ``gaps_accepted``).
    """

    def __init__(self, stats: GapCounts) -> None:
        self.stats = stats
        # Next offset per partition after what was delivered (and kept).
        self._expected: dict[TopicPartition, int] = {}
        # Per partition: the first missing offset of its open gap, and how many
        # polls answered past it the same way.
        self._rereads: dict[TopicPartition, tuple[int, int]] = {}
        #: Gaps accepted since the last :meth:`take_accepted`: partition -> the
        #: first offset after the gap.
        self._accepted: dict[TopicPartition, int] = {}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is known of ``partitions`` (revoked, or sought elsewhere on purpose)."""
        for tp in partitions:
            self._expected.pop(tp, None)
            self._rereads.pop(tp, None)

    def cut(self, batch: dict[Any, list[Any]], consumer: Any) -> dict[Any, list[Any]]:
        """``batch`` with each partition's records cut before an offset gap; seeks back there.

        Records at or below the expected offset (a redelivery, a rewind) are
        kept: the apply skips what it holds already.
        """
        kept: dict[Any, list[Any]] = {}
        for tp, raws in batch.items():
            if not raws:
                continue  # says nothing about an open gap
            following = self._expected.get(tp)
            first, last = raws[0].offset, raws[-1].offset
            if (following is None or first <= following) and last - first == len(raws) - 1:
                # The usual poll (offsets only grow): contiguous, checked in O(1).
                self._rereads.pop(tp, None)
                self._expected[tp] = last + 1
                kept[tp] = raws
                continue
            gap = False
            for index, raw in enumerate(raws):
                if following is not None and raw.offset > following:
                    gap = True
                    if not self._confirmed(tp, following, raw.offset):
                        raws = raws[:index]
                        if tp in consumer.assignment():
                            consumer.seek(tp, following)
                        break
                following = raw.offset + 1
            else:
                if not gap:
                    # Whatever gap was open came back filled.
                    self._rereads.pop(tp, None)
            if following is not None:
                self._expected[tp] = following
            if raws:
                kept[tp] = raws
        return kept

    def take_accepted(self) -> dict[TopicPartition, int]:
        """The gaps accepted since the last call: partition -> the first offset after its gap.

        The worker tells its namespace follower, whose check of the applied
        positions would otherwise send the partition back before the gap again.
        """
        accepted, self._accepted = self._accepted, {}
        return accepted

    def _confirmed(self, tp: TopicPartition, missing: int, found: int) -> bool:
        """Whether the gap ``[missing, found)`` came back often enough to be part of the log."""
        first, answers = self._rereads.get(tp, (missing, 0))
        answers = answers + 1 if first == missing else 1
        if answers <= GAP_REREADS:
            if answers == 1:
                self.stats.gaps_reread += 1
                log.info(
                    "partition %s-%d delivered offset %d after %d: re-reading the records between",
                    tp.topic, tp.partition, found, missing - 1,
                )
            self._rereads[tp] = (missing, answers)
            return False
        self._rereads.pop(tp, None)
        self._accepted[tp] = found
        self.stats.gaps_accepted += 1
        log.warning(
            "partition %s-%d has no records at offsets %d to %d after %d re-reads "
            "(transaction markers or compaction): going on from %d",
            tp.topic, tp.partition, missing, found - 1, GAP_REREADS, found,
        )
        return True
