"""Where a replay stands: counts, rate and ETA, shared by every kind of replay.

A rebuild, a one-session rebuild, a verify run and the checkpoint replay all
report through :class:`ReplayProgress` and call a :data:`ProgressCallback`
after every batch, which is what ``chatlog replay``'s progress bar draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ReplayProgress:
    """Where a replay stands, and in the end what it did.

    ``done`` counts records read, ``applied``/``skipped`` what the projection
    did with them, ``undecodable`` records that are no chatlog event (or whose
    key is not their session id) and ``failed`` events the projection refused
    (both go to the dead-letter topic in live projection).
    """

    namespace: str = ""
    total: int = 0
    done: int = 0
    applied: int = 0
    skipped: int = 0
    undecodable: int = 0
    failed: int = 0
    partitions_total: int = 0
    partitions_done: int = 0
    resumed: bool = False
    as_of: datetime | None = None
    switched_from: str | None = None
    positions: dict[int, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the replay started until it finished (a switch's hand-off excluded)."""
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def rate(self) -> float:
        """Events read per second."""
        elapsed = self.elapsed_s
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when known."""
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "namespace": self.namespace,
            "events_total": self.total,
            "events_read": self.done,
            "applied": self.applied,
            "skipped": self.skipped,
            "undecodable": self.undecodable,
            "failed": self.failed,
            "partitions_total": self.partitions_total,
            "partitions_done": self.partitions_done,
            "resumed": self.resumed,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "switched_from": self.switched_from,
            "positions": {str(p): o for p, o in sorted(self.positions.items())},
            "seconds": round(self.elapsed_s, 3),
            "events_per_second": round(self.rate, 1),
        }


#: Called after every batch a replay applies (or folds), with its progress so far.
ProgressCallback = Callable[[ReplayProgress], None]
