"""Rebuild a target's LangGraph saver read model from the checkpoint topic.

:class:`~chatlog.projector.targets.rebuild.TargetReplayer` calls it after the
chat topic: the checkpoint topic (``<topic>.checkpoints``) is read with manual
assignment from the target's own checkpoint positions (so a rebuild killed
half-way resumes, and one that follows a live target projector applies only
what it has not) to the end offsets captured at the start, then caught up a
few rounds. Each batch goes through the same
:meth:`~chatlog.projector.targets.protocol.CheckpointTarget.apply_checkpoints`
as live projection, positions included; replaying never resurrects a deleted
thread, because its ``ThreadDeleted`` is replayed too.
"""

from __future__ import annotations

from chatlog.producers.admin import end_offsets
from chatlog.producers.log_reader import beginning_offsets, read_range
from chatlog.projector.checkpoint_projection import replay_decoder
from chatlog.projector.replay import ProgressCallback, ReplayProgress
from chatlog.projector.targets.protocol import CheckpointTarget
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.settings import Settings

#: Rounds of catching up with checkpoints written during a rebuild.
CATCH_UP_ROUNDS = 5


def rebuild_checkpoints(
    settings: Settings,
    target: CheckpointTarget,
    progress: ReplayProgress,
    on_progress: ProgressCallback | None = None,
) -> dict[int, int]:
    """Apply the checkpoint topic to ``target`` from its positions; return where it got.

    Counts go into ``progress`` (read, applied, skipped, refused as failed).
    A checkpoint topic nobody has written to yet is nothing to replay.

    Raises:
        TopicError: the topic cannot be read.
        TargetError: the store failed; running the rebuild again resumes.
    """
    topic = settings.checkpoint_topic
    decode = replay_decoder(CheckpointCodec())

    ends = end_offsets(settings, topic, missing_ok=True)
    if not ends:
        return {}
    begins = beginning_offsets(settings, topic, list(ends))
    recorded = target.checkpoint_positions()
    reached = {p: max(begins[p], recorded.get(p, begins[p])) for p in ends}
    for _ in range(CATCH_UP_ROUNDS):
        if all(ends[p] <= reached.get(p, 0) for p in ends):
            break
        for records, next_offsets in read_range(settings, topic, reached, ends, progress, decode):
            result = target.apply_checkpoints(records, advance=next_offsets)
            progress.applied += result.applied
            progress.skipped += result.skipped
            progress.failed += len(result.failed)
            reached.update(next_offsets)
            if on_progress is not None:
                on_progress(progress)
        ends = end_offsets(settings, topic)
    return reached
