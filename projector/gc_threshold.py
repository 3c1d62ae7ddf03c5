"""A raised young-generation GC threshold for the projector's and the replay's loops.

A batch allocates thousands of short-lived containers (Kafka records,
changes, script arguments); with Python's default threshold (700) the
collector ran every few hundred of them and cost the projector about 15%
of its throughput on the benchmark machine. The threshold is process-wide,
so it is only raised where chatlog owns the process (``chatlog projector
run``, ``chatlog replay``) or where a caller asks for it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: The generation-0 threshold the CLI's projector and replays run with.
SERVICE_GC_THRESHOLD = 50_000


@contextmanager
def young_gc_threshold(threshold: int | None) -> Iterator[None]:
    """Run the block with generation 0 collected every ``threshold`` allocations.

    ``None`` changes nothing. The previous thresholds are restored after.
    """
    if threshold is None:
        yield
        return
    previous = gc.get_threshold()
    gc.set_threshold(threshold, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
