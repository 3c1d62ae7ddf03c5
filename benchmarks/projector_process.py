"""The parent side of a projector in a process of its own (the child is ``projector_child``).

The memory and the append-to-visible benchmarks need the projector as it
runs in production: alone in its process (its RSS is then its own, and it
does not share a GIL with the writer). Settings come from the environment
(``Settings.from_env``). Protocol, one line each way:

* the child prints ``ready`` once the group assigned it its partitions;
* ``wait N`` -> the child waits until it has applied ``N`` events and prints
  ``applied <count> rss <bytes>`` (or ``timeout <count>`` after two minutes);
* ``stop`` (or end of input) -> the child stops its projector and exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from types import TracebackType

from chatlog.errors import ChatLogError
from chatlog.settings import ENVIRONMENT, Settings


class ProjectorProcess:
    """The parent side: start the child projector, wait for events, read its RSS.

    Args:
        settings: Settings the child projector runs with.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 60.0) -> ProjectorProcess:
        """Start the child and wait until its projector owns its partitions."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatlog.benchmarks.projector_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **environment(self.settings)},
        )
        line = self._readline()
        if line != "ready":
            raise ChatLogError(f"the benchmark projector process did not start: {line!r}")
        return self

    def wait_applied(self, count: int) -> int:
        """Block until the child applied ``count`` events; return its RSS in bytes."""
        self._send(f"wait {count}")
        reply = self._readline().split()
        if len(reply) != 4 or reply[0] != "applied":
            raise ChatLogError(f"the benchmark projector did not apply {count} events: {reply}")
        return int(reply[3])

    def stop(self) -> None:
        """Stop the child (its projector drains and commits first)."""
        if self.process is None:
            return
        try:
            self._send("stop")
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def _send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def _readline(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def __enter__(self) -> ProjectorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def environment(settings: Settings) -> Mapping[str, str]:
    env: dict[str, str] = {}
    for name, variable in ENVIRONMENT.items():
        value = getattr(settings, name)
        if value is not None:
            env[variable] = str(value).lower() if isinstance(value, bool) else str(value)
    for key, value in settings.kafka_options.items():
        env[f"CHATLOG_KAFKA_{key.upper()}"] = str(value)
    return env

