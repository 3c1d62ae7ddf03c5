"""CPU time of processes: the machine-independent cost the capacity model uses.

Wall-clock rates move with whatever else the machine runs; the CPU seconds a
process spent per event move far less. Redis reports its own
(``INFO cpu``), so its figure holds for a configured Redis too.
"""

from __future__ import annotations

import os

import redis


def live_threads_cpu_s(pid: int) -> float:
    """CPU seconds the live threads of process ``pid`` have used, to the nanosecond.

    The process's CPU times (``/proc/<pid>/stat``) count in clock ticks
    (10 ms): over a few seconds of an almost idle process that is zero, one or
    two ticks, and which of them is chance. The scheduler's own account
    (``/proc/<pid>/task/*/schedstat``) is exact, but a thread that ends takes
    its time with it, so this is for windows in which the process keeps its
    threads (an idle process).
    """
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as stat:
                total += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return total / 1e9


def redis_cpu_s(client: redis.Redis) -> float:
    """User plus system CPU seconds the Redis server has used, from ``INFO cpu``."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
