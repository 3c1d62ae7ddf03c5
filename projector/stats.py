"""Running totals of one projector worker."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ProjectorStats:
    """Running totals of one projector, for tests, the CLI and metrics."""

    batches: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    #: Sealed events skipped because their subject was erased (data key destroyed).
    shredded: int = 0
    #: Verdicts (neither applied nor dead-lettered): appends of ids a session held,
    #: conditional appends refused by their expected version.
    deduplicated: int = 0
    conflicts: int = 0
    commits_failed: int = 0
    retries: int = 0
    applied_by_type: dict[str, int] = field(default_factory=dict)
    dead_lettered_by_type: dict[str, int] = field(default_factory=dict)
    last_poll_at: float = 0.0
    #: Times a writer's wake-up resumed this idle worker's paused fetching (CHATLOG_WAKEUP),
    #: and the records read by the fetches wake-ups triggered.
    woken: int = 0
    woken_records: int = 0
    #: Read-model repairs this worker ran (loss detection, issue 14).
    namespace_repairs: int = 0
    session_repairs: int = 0
    #: Time spent in namespace repairs, in seconds.
    repair_seconds: float = 0.0
    #: Offset gaps in what the consumer delivered: re-read from the first missing
    #: offset, and accepted as part of the log after repeated re-reads (offset_gaps).
    gaps_reread: int = 0
    gaps_accepted: int = 0

    def count_applied(self, applied: int, skipped: int, by_type: dict[str, int]) -> None:
        """Add one apply step's verdicts."""
        self.applied += applied
        self.skipped += skipped
        for name, count in by_type.items():
            self.applied_by_type[name] = self.applied_by_type.get(name, 0) + count
