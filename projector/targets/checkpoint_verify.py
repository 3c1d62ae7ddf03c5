"""Verify a target's LangGraph threads: fold the checkpoint log in memory and compare.

The checkpoint topic is read (manual assignment) up to the target's own
checkpoint positions, folded into plain dicts with the same rules the stores
apply (:func:`~chatlog.projector.targets.checkpoint_fold.fold_into`), and each
thread's stored state (row and every checkpoint, blob, write and chunk with
its value) is compared with what the target holds. It finds what a store
lost or holds extra (rows deleted by hand, a restore from an older backup, a
half-written thread); the fold itself is checked against the Redis script by
``tests/integration/test_checkpoint_target_replay.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chatlog.producers.admin import end_offsets
from chatlog.producers.log_reader import beginning_offsets, read_range
from chatlog.projector.checkpoint_projection import (
    CheckpointApplyResult,
    CheckpointRecord,
    replay_decoder,
    thread_arguments,
)
from chatlog.projector.replay_progress import ReplayProgress
from chatlog.projector.targets.checkpoint_fold import (
    KINDS,
    StoredRefs,
    ThreadRow,
    ThreadState,
    fold_into,
)
from chatlog.projector.targets.protocol import CheckpointTarget
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.settings import Settings


class MemoryCheckpoints:
    """The checkpoint log folded into memory: the reference a target is compared with."""

    def __init__(self) -> None:
        self.threads: dict[str, ThreadState] = {}
        self.codec = CheckpointCodec()

    def _chunks(self, thread_id: str, names: list[str]) -> dict[str, bytes]:
        stored = self.threads.get(thread_id)
        parts = {} if stored is None else stored.items["chunks"]
        return {name: parts[name] for name in names if name in parts}

    def apply(self, records: list[CheckpointRecord]) -> CheckpointApplyResult:
        """Fold ``records`` (log order) onto the threads, as a store applies them."""
        result = CheckpointApplyResult()
        for thread_id, items in thread_arguments(
            records, self.codec, self._chunks, result
        ).items():
            state = self.threads.get(thread_id) or ThreadState(ThreadRow())
            stored_checkpoints = state.items["checkpoints"].items()
            refs = StoredRefs(
                {m: (versions, run) for m, (_, versions, run) in stored_checkpoints},
                set(state.items["writes"]),
            )
            row = dataclasses.replace(state.row, namespaces=dict(state.row.namespaces))
            outcome = fold_into(result, thread_id, items, row, refs)
            if outcome is None or not outcome.changed:
                continue
            if outcome.cleared:
                state.items = {kind: {} for kind in KINDS}
            for kind, changed in (("checkpoints", outcome.checkpoints),
                                  ("blobs", outcome.blobs), ("writes", outcome.writes),
                                  ("chunks", outcome.chunks)):
                stored: dict[str, Any] = state.items[kind]
                for name, value in changed.items():
                    if value is None:
                        stored.pop(name, None)
                    else:
                        stored[name] = value
            state.row = outcome.row
            self.threads[thread_id] = state
        return result


#: Rounds of folding on when a live projector moved the target past the fold.
SETTLE_ROUNDS = 5


def verify_checkpoints(
    settings: Settings, target: CheckpointTarget, progress: ReplayProgress
) -> tuple[int, list[str]]:
    """Fold the checkpoint topic to the target's positions; return threads checked and differing.

    A thread that differs is checked again after folding on to the target's
    newer positions, while a live projector moves them (a few rounds), so
    its progress is not reported as a difference.

    Raises:
        TopicError: the topic cannot be read.
        TargetError: the store failed.
    """
    topic = settings.checkpoint_topic
    memory = MemoryCheckpoints()
    decode = replay_decoder(memory.codec)
    ends = end_offsets(settings, topic, missing_ok=True)
    reached = beginning_offsets(settings, topic, list(ends)) if ends else {}

    def fold_to_positions() -> bool:
        recorded = target.checkpoint_positions()
        upto = {p: min(end, recorded.get(p, 0)) for p, end in ends.items()}
        if all(upto[p] <= reached.get(p, 0) for p in upto):
            return False
        for records, next_offsets in read_range(settings, topic, reached, upto, progress, decode):
            memory.apply(records)
            reached.update(next_offsets)
        reached.update({p: max(reached.get(p, 0), o) for p, o in upto.items()})
        return True

    fold_to_positions()
    threads = sorted(set(memory.threads) | set(target.checkpoint_thread_ids()))
    differing = [t for t in threads if target.checkpoint_state(t) != memory.threads.get(t)]
    for _ in range(SETTLE_ROUNDS):
        if not differing:
            break
        ends = end_offsets(settings, topic, missing_ok=True)
        if not fold_to_positions():
            break
        differing = [t for t in differing if target.checkpoint_state(t) != memory.threads.get(t)]
    return len(threads), differing
