"""CPU time of processes: the machine-independent cost the capacity model uses.

Wall-clock rates move with whatever else the machine runs; the CPU seconds a
process spent per event move far less. Redis reports its own
(``INFO cpu``), so its figure holds for a configured Redis too.
"""

from __future__ import annotations

import os

import redis


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used (Linux ``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; the fields after its ")" do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def redis_cpu_s(client: redis.Redis) -> float:
    """User plus system CPU seconds the Redis server has used, from ``INFO cpu``."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
