"""The child side of :class:`~chatlog.benchmarks.projector_process.ProjectorProcess`.

Runs a :class:`Projector` on ``Settings.from_env()`` and answers the parent's
``wait N`` lines with ``applied <count> rss <bytes>``; ``stop`` ends it.
Kept out of the package's imports so ``python -m`` runs it exactly once.
"""

from __future__ import annotations

import gc
import sys
import time

from chatlog.benchmarks.timing import rss_bytes
from chatlog.projector.gc_threshold import SERVICE_GC_THRESHOLD
from chatlog.projector.worker import Projector
from chatlog.settings import Settings

_WAIT_S = 120.0


def main() -> None:
    """Run the child side of the protocol."""
    # As `chatlog projector run` runs it.
    projector = Projector(Settings.from_env(), gc_threshold=SERVICE_GC_THRESHOLD)
    with projector.running():
        print("ready", flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "stop":
                break
            if command == "wait":
                target = int(argument)
                deadline = time.monotonic() + _WAIT_S
                while projector.stats.applied < target and time.monotonic() < deadline:
                    time.sleep(0.01)
                if projector.stats.applied < target:
                    print(f"timeout {projector.stats.applied}", flush=True)
                    continue
                gc.collect()
                print(f"applied {projector.stats.applied} rss {rss_bytes()}", flush=True)


if __name__ == "__main__":
    main()
