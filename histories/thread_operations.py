"""What ``prune``, ``copy_thread`` and ``delete_for_runs`` publish, computed from a read.

Pure functions from the saver's reads (after its own writes) to the one
event per thread each operation publishes; the projector applies that event
exactly, so a replay does the same thing whatever else happened since.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from chatlog.histories.checkpoint_lineage import Lineage
from chatlog.histories.checkpoint_read_model import StoredEntry, ThreadSelection
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    ChannelVersion,
    CheckpointPut,
    CheckpointRef,
    CheckpointsDeleted,
    PendingWriteValue,
    ThreadCopied,
    WritesPut,
)

KEEP_LATEST: Final = "keep_latest"
DELETE: Final = "delete"
PRUNE_STRATEGIES: Final = (KEEP_LATEST, DELETE)
#: The metadata key in which LangGraph counts updates of each DeltaChannel since its snapshot.
DELTA_COUNTERS: Final = "counters_since_delta_snapshot"


def delta_channels(metadata: Any) -> list[str]:
    """The DeltaChannels a checkpoint rebuilds from ancestors' writes (not from a snapshot)."""
    counters = metadata.get(DELTA_COUNTERS) if isinstance(metadata, Mapping) else None
    return sorted(str(channel) for channel in counters) if isinstance(counters, Mapping) else []


def pruned(selection: ThreadSelection, walks: Mapping[str, Lineage]) -> CheckpointsDeleted | None:
    """``keep_latest``: every checkpoint but each namespace's newest and its delta ancestors.

    ``walks`` holds, per namespace whose newest checkpoint counts DeltaChannel
    updates, the parent chain back to each such channel's nearest stored
    value; those ancestors (and their writes) stay so the channels rebuild.
    """
    kept: set[tuple[str, str]] = set()
    for entry in selection.entries:
        if not any(ns == entry.checkpoint_ns for ns, _ in kept):
            kept.add((entry.checkpoint_ns, entry.checkpoint_id))
    for checkpoint_ns, walked in walks.items():
        kept.update((checkpoint_ns, ancestor.checkpoint_id) for ancestor in walked.ancestors)
    dropped = tuple(
        CheckpointRef(entry.checkpoint_ns, entry.checkpoint_id)
        for entry in selection.entries
        if (entry.checkpoint_ns, entry.checkpoint_id) not in kept
    )
    return CheckpointsDeleted(dropped, KEEP_LATEST) if dropped else None


def _put(entry: StoredEntry, seen: set[tuple[str, str, str]]) -> CheckpointPut:
    versions = dict(entry.versions)
    blobs = []
    for channel, value in entry.values.items():
        key = (entry.checkpoint_ns, channel, versions[channel])
        if key not in seen:
            seen.add(key)
            blobs.append(ChannelBlob(channel, versions[channel], value))
    return CheckpointPut(
        checkpoint_ns=entry.checkpoint_ns,
        checkpoint_id=entry.checkpoint_id,
        checkpoint=entry.stored.checkpoint,
        metadata=entry.stored.metadata,
        parent_checkpoint_id=entry.stored.parent_checkpoint_id,
        channel_versions=tuple(ChannelVersion(c, v) for c, v in entry.versions),
        blobs=tuple(blobs),
    )


def _writes(entry: StoredEntry) -> list[WritesPut]:
    by_task: dict[tuple[str, str], list[PendingWriteValue]] = {}
    for write in entry.writes:
        by_task.setdefault((write.task_id, write.task_path), []).append(
            PendingWriteValue(write.idx, write.channel, write.value)
        )
    return [
        WritesPut(entry.checkpoint_ns, entry.checkpoint_id, task_id, task_path, tuple(values))
        for (task_id, task_path), values in by_task.items()
    ]


def copied(source_thread_id: str, selection: ThreadSelection) -> ThreadCopied | None:
    """The whole source thread (every namespace, the full parent chain, pending writes)."""
    if not selection.entries:
        return None
    seen: set[tuple[str, str, str]] = set()
    # Oldest first, so the copy's namespaces appear in the source's order.
    entries = list(reversed(selection.entries))
    return ThreadCopied(
        source_thread_id,
        tuple(_put(entry, seen) for entry in entries),
        tuple(writes for entry in entries for writes in _writes(entry)),
    )


def run_deletions(
    found: Mapping[str, list[tuple[str, str]]],
) -> list[tuple[str, CheckpointsDeleted]]:
    """One ``CheckpointsDeleted`` per thread for the checkpoints a run index lists."""
    return [
        (thread, CheckpointsDeleted(tuple(CheckpointRef(ns, cid) for ns, cid in refs), "runs"))
        for thread, refs in sorted(found.items())
    ]
