"""Real processes for the fault tests: the projector as ``chatlog projector run``, a durable Redis.

A fault test kills these with SIGKILL, so they must be separate processes:
nothing in them gets to clean up, exactly as in a crash.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from chatlog.cli.devstack import free_port, redis_binary, wait_for_port
from chatlog.settings import Settings

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # A test run that is itself killed must not leave workers behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def environment(settings: Settings) -> dict[str, str]:
    """The environment that points a chatlog process at ``settings``' services and names."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "CHATLOG_TOPIC": settings.topic,
        "CHATLOG_NAMESPACE": settings.namespace,
        "CHATLOG_CONSUMER_GROUP": settings.consumer_group,
        "CHATLOG_PARTITIONS": str(settings.partitions),
        "CHATLOG_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
        "CHATLOG_HEARTBEAT_INTERVAL_MS": str(settings.consumer_heartbeat_interval_ms),
        "CHATLOG_MAX_POLL_RECORDS": str(settings.max_poll_records),
        "CHATLOG_PUBLISH_TIMEOUT": str(settings.publish_timeout_s),
        "CHATLOG_READ_TIMEOUT": str(settings.read_timeout_s),
    }


class ProjectorProcess:
    """``python -m chatlog.cli projector run`` as a child process that can be SIGKILLed.

    Its stderr goes to ``log_path`` so a failing test can show what the worker said.
    """

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ProjectorProcess:
        """Start the worker (it joins the consumer group on its own)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatlog.cli", "-v", "projector", "run"],
                env=environment(self.settings),
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def alive(self) -> bool:
        """Whether the worker process is running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker: no batch finished, no commit, no goodbye to the group."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (finish the batch, commit, leave the group); SIGKILL if it hangs."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines the worker wrote to stderr."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class DurableRedis:
    """A redis-server of the test's own that keeps its data across a SIGKILL.

    The append-only file is fsynced on every write, so a kill -9 followed by
    :meth:`start` on the same port brings back everything acknowledged: the
    outage is an outage, not a wipe.
    """

    def __init__(self, data_dir: Path, *, persistent: bool = True) -> None:
        self.data_dir = data_dir
        #: With ``False`` the server keeps nothing: a restart comes back empty.
        self.persistent = persistent
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> DurableRedis:
        """Start (or restart) the server on its port and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "always",
                "--dir", str(self.data_dir),
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_for_port(self.port, 15, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL the server: every connection drops at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server for good."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
