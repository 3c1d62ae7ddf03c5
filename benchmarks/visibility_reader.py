"""The reader side of :func:`~chatlog.benchmarks.visibility.append_to_visible`, in its own process.

It runs apart from the writer so the two do not share a GIL: a reader
thread in the writer's process waits for the writer's threads between
reads (up to the 5 ms switch interval each time), and that lands in the
figure. Settings come from the environment (``Settings.from_env``).
Protocol, one line each way:

* the reader prints ``ready`` once it can read;
* ``probe <started> <partition> <offset> <session>`` -> the reader polls that
  session until its tracking position covers the offset; ``<started>`` is the
  start of the append call on ``time.monotonic()`` (CLOCK_MONOTONIC on Linux,
  the same clock in every process on the machine);
* ``done`` (or end of input) -> once every probe is visible the reader prints
  ``latencies <seconds> ...`` and exits, or ``error <message>`` if it failed.

Kept out of the package's imports so ``python -m`` runs it exactly once.
"""

from __future__ import annotations

import heapq
import sys
import threading
import time
from collections import deque

from chatlog.errors import ChatLogError
from chatlog.histories.read_model import ReadModelReader
from chatlog.histories.store import ChatLog
from chatlog.keys import META_OFFSET, META_PARTITION
from chatlog.settings import Settings

#: A probe not visible after this long fails the benchmark.
VISIBLE_TIMEOUT_S = 30.0

#: (start of the append call, partition, offset, probe session) of one probe.
_Probe = tuple[float, int, int, str]


def main() -> None:
    """Run the reader side of the protocol."""
    arrived: deque[_Probe | None] = deque()

    def listen() -> None:
        # A thread of its own: the poll loop below must not block on stdin.
        for line in sys.stdin:
            command, _, rest = line.strip().partition(" ")
            if command == "done":
                break
            if command == "probe":
                started, partition, offset, sid = rest.split(" ", 3)
                arrived.append((float(started), int(partition), int(offset), sid))
        arrived.append(None)

    try:
        with ChatLog(Settings.from_env()) as chatlog:
            reader = chatlog.reader
            if not isinstance(reader, ReadModelReader):
                raise TypeError("the visibility benchmark reads Redis: unset CHATLOG_READ_MODEL")
            print("ready", flush=True)
            threading.Thread(target=listen, name="bench-visible-input", daemon=True).start()
            latencies = _poll(reader, arrived)
    except Exception as exc:  # the writer's process raises it as its own error
        print(f"error {type(exc).__name__}: {exc}", flush=True)
        return
    print("latencies " + " ".join(f"{s:.6f}" for s in latencies), flush=True)


def _poll(reader: ReadModelReader, arrived: deque[_Probe | None]) -> list[float]:
    """Read the pending probes' sessions, every millisecond, until all are visible.

    A pass asks Redis, in one round trip, for the tracking position of the
    lowest pending probe of each partition; a probe it covers is then read
    through the read model reader, and its latency taken when that read
    returns. Later probes on a partition wait for the earlier ones: the
    projector applies a partition in offset order. A read per pending probe
    on every pass would cost a round trip each; when the projector falls
    behind their number grows until the reader takes the CPU the projector
    needs.
    """
    heads: dict[int, list[tuple[int, float, str]]] = {}
    latencies: list[float] = []
    writing = True
    while writing or heads:
        while arrived:
            probe = arrived.popleft()
            if probe is None:
                writing = False
            else:
                started, partition, offset, sid = probe
                heapq.heappush(heads.setdefault(partition, []), (offset, started, sid))
        if heads:
            keys = reader.current_keys()
            pipe = reader.client.pipeline(transaction=False)
            for waiting in heads.values():
                pipe.hmget(keys.meta(waiting[0][2]), [META_PARTITION, META_OFFSET])
            tracked = pipe.execute()
            for (partition, waiting), (at_partition, at_offset) in zip(
                list(heads.items()), tracked, strict=True
            ):
                if at_partition is not None and int(at_partition) == partition and (
                    int(at_offset) >= waiting[0][0]
                ):
                    _read_visible(reader, partition, waiting, latencies)
                elif time.monotonic() - waiting[0][1] > VISIBLE_TIMEOUT_S:
                    raise ChatLogError(
                        f"probe on {waiting[0][2]} not visible after {VISIBLE_TIMEOUT_S:g}s: "
                        "is the projector running?"
                    )
                if not waiting:
                    del heads[partition]
        time.sleep(0.001)
    return latencies


def _read_visible(
    reader: ReadModelReader,
    partition: int,
    waiting: list[tuple[int, float, str]],
    latencies: list[float],
) -> None:
    """Read the partition's pending probes in offset order; time each one a read shows."""
    while waiting:
        offset, started, sid = waiting[0]
        snapshot = reader.read(sid, limit=1)
        if snapshot.partition != partition or snapshot.offset < offset:
            return
        latencies.append(time.monotonic() - started)
        heapq.heappop(waiting)


if __name__ == "__main__":
    main()
