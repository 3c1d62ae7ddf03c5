"""The checkpoint topic's share of a polled batch: decode, apply, dead-letter, commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatlog.errors import ChatLogError
from chatlog.projector.checkpoint_projection import CheckpointProjection, decode_record
from chatlog.projector.commits import OffsetCommits
from chatlog.projector.dead_letter import DeadLetter
from chatlog.projector.outage_retry import OutageRetry
from chatlog.projector.stats import ProjectorStats
from chatlog.schemas.checkpoint_codec import CheckpointCodec


class CheckpointTopic:
    """Applies checkpoint records to the namespace the LangGraph saver reads.

    Args:
        projection: The checkpoint projection (configured namespace).
        retry: The worker's outage retry.
        publish_letters: Logs and publishes dead letters (``True`` on success).
        commits: The worker's offset commits.
        stats: The worker's totals.
    """

    def __init__(
        self,
        projection: CheckpointProjection,
        *,
        retry: OutageRetry,
        publish_letters: Callable[[list[DeadLetter]], bool],
        commits: OffsetCommits,
        stats: ProjectorStats,
    ) -> None:
        self.projection = projection
        self.codec = CheckpointCodec()
        self.retry = retry
        self.publish_letters = publish_letters
        self.commits = commits
        self.stats = stats

    def process(self, batch: dict[Any, list[Any]]) -> None:
        """Decode, apply and dead-letter the checkpoint records, then commit their offsets."""
        records, letters, raws_at = [], [], {}
        for raws in batch.values():
            for raw in raws:
                raws_at[(raw.partition, raw.offset)] = raw
                try:
                    records.append(decode_record(self.codec, raw))
                except ChatLogError as exc:
                    letters.append(DeadLetter(raw, f"undecodable: {exc}"))
        result = self.retry(lambda: self.projection.apply(records), "apply checkpoints")
        if result is None:
            return
        letters += [DeadLetter(raws_at[(r.partition, r.offset)], why) for r, why in result.failed]
        if letters and self.retry(lambda: self.publish_letters(letters), "dead-letter") is None:
            return
        self.stats.count_applied(result.applied, result.skipped, result.applied_by_type)
        self.stats.dead_lettered += len(letters)
        self.commits.commit({tp: raws[-1].offset + 1 for tp, raws in batch.items() if raws})
