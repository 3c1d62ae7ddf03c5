"""Latency samples and process memory, the two raw figures every benchmark reduces to."""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``samples``.

    Raises:
        ValueError: ``samples`` is empty.
    """
    if not samples:
        raise ValueError("no samples to take a percentile of")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of process ``pid`` (default: this one) now, in bytes."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # No procfs: the peak is the closest portable figure (Linux reports KiB).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if pid in (
        None, os.getpid()
    ) else 0
