"""Prometheus metrics, liveness and readiness of one projector worker.

:class:`ProjectorMetrics` holds the worker's metrics in its own
``CollectorRegistry`` (so several projectors can live in one process, as in
the tests) and is handed to :class:`~chatlog.projector.worker.Projector`,
which reports to it at a few points of its loop. :class:`MetricsServer`
serves the registry on ``/metrics`` with ``/healthz`` and ``/readyz`` next
to it. ``prometheus-client`` is imported only here, lazily, so the projector
runs without the ``metrics`` extra when no metrics are asked for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import redis

from chatlog.errors import ConfigurationError, ReadModelError

if TYPE_CHECKING:
    from kafka import KafkaConsumer, TopicPartition

    from chatlog.projector.redis_projection import ApplyResult

#: Seconds of batch apply time; a batch is one Redis pipeline round trip.
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds from an event's ``occurred_at`` to its application in Redis.
END_TO_END_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 300.0, 3600.0)
#: How often the worker loop refreshes lag and readiness from its consumer.
REFRESH_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer of a health or readiness check."""

    ok: bool
    reason: str


class ProjectorMetrics:
    """The metrics of one projector, in a registry of their own.

    Args:
        registry: Registry to register in (default: a new ``CollectorRegistry``).
        ready_max_lag: Readiness allows the assigned partitions to be at most
            this many events behind in total.
        stale_after_s: Liveness fails when the loop has not iterated (polled or
            retried) for this long.

    Raises:
        ConfigurationError: ``prometheus-client`` is not installed.

    """

    def __init__(
        self,
        *,
        registry: Any = None,
        ready_max_lag: int = 1_000,
        stale_after_s: float = 60.0,
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise ConfigurationError(
                "metrics need prometheus-client: pip install 'chatlog[metrics]'"
            ) from exc
        self._prom = prom
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self.ready_max_lag = ready_max_lag
        self.stale_after_s = stale_after_s
        r = self.registry
        self.applied = prom.Counter(
            "chatlog_events_applied", "Events applied to the read model.", ["event_type"],
            registry=r,
        )
        self.skipped = prom.Counter(
            "chatlog_events_skipped",
            "Events skipped as duplicates (at or below the session's last applied offset).",
            ["event_type"], registry=r,
        )
        self.dead_lettered = prom.Counter(
            "chatlog_events_dead_lettered", "Events sent to the dead-letter topic.",
            ["event_type"], registry=r,
        )
        self.verdicts = prom.Counter(
            "chatlog_events_verdicts",
            "Events decided without a change: a message id the session held (duplicate) "
            "or a conditional append at another version (conflict).",
            ["verdict"], registry=r,
        )
        self.batches = prom.Counter(
            "chatlog_batches", "Batches applied and committed.", registry=r
        )
        self.shredded = prom.Counter(
            "chatlog_events_shredded",
            "Encrypted events skipped because their subject's data key was destroyed (erased).",
            registry=r,
        )
        self.apply_seconds = prom.Histogram(
            "chatlog_batch_apply_seconds",
            "Time from writing one batch to Redis to reading its verdicts (the worker "
            "reads the next batch from Kafka meanwhile).",
            buckets=APPLY_BUCKETS, registry=r,
        )
        self.end_to_end_seconds = prom.Histogram(
            "chatlog_end_to_end_latency_seconds",
            "Time from an event's occurred_at to its application in Redis.",
            buckets=END_TO_END_BUCKETS, registry=r,
        )
        self.lag = prom.Gauge(
            "chatlog_consumer_lag",
            "Events behind the end of the partition (end offset minus position), "
            "for the partitions assigned to this worker.",
            ["topic", "partition"], registry=r,
        )
        self.assigned = prom.Gauge(
            "chatlog_assigned_partitions", "Partitions assigned to this worker.", registry=r
        )
        self.rebalances = prom.Counter(
            "chatlog_rebalances", "Partition assignments and revocations.", ["kind"], registry=r
        )
        self.errors = prom.Counter(
            "chatlog_errors", "Broker and Redis errors seen by the worker.",
            ["service", "operation"], registry=r,
        )
        self.retries = prom.Counter(
            "chatlog_retries", "Retries of a failed apply or dead-letter publish.",
            ["operation"], registry=r,
        )
        self.repairs = prom.Counter(
            "chatlog_read_model_repairs",
            "Read-model repairs after detected lost state (namespace: rebuilt in place; "
            "session: one session rebuilt).",
            ["scope"], registry=r,
        )
        self.ready = prom.Gauge(
            "chatlog_ready", "1 when partitions are assigned and caught up.", registry=r
        )
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_iteration = 0.0
        self._last_refresh = 0.0
        self._lags: dict[tuple[str, int], int | None] = {}
        self._readiness = Probe(False, "no partitions assigned yet")

    # -- reported by the worker ------------------------------------------

    def batch_applied(
        self, result: ApplyResult, dead_lettered_types: Iterable[str], apply_seconds: float
    ) -> None:
        """Count one applied and committed batch."""
        self.batches.inc()
        self.apply_seconds.observe(apply_seconds)
        for name, count in result.applied_by_type.items():
            self.applied.labels(name).inc(count)
        for name, count in result.skipped_by_type.items():
            self.skipped.labels(name).inc(count)
        for name in dead_lettered_types:
            self.dead_lettered.labels(name).inc()
        if result.deduplicated:
            self.verdicts.labels("duplicate").inc(result.deduplicated)
        if result.conflicts:
            self.verdicts.labels("conflict").inc(result.conflicts)
        now = time.time()
        observe = self.end_to_end_seconds.observe
        for change in result.applied_records:
            observe(max(now - change.event_ms / 1000, 0.0))

    def error(self, service: str, operation: str) -> None:
        """Count a failed call to ``service`` (``kafka`` or ``redis``)."""
        self.errors.labels(service, operation).inc()

    def retried(self, operation: str, error: BaseException) -> None:
        """Count a retry of ``operation`` after ``error``; the worker is alive but not ready."""
        service = "redis" if isinstance(error, (redis.RedisError, ReadModelError)) else "kafka"
        self.error(service, operation)
        self.retries.labels(operation).inc()
        with self._lock:
            self._last_iteration = time.monotonic()
            # The error's text can name hosts, users or URLs: the worker logs
            # it; the unauthenticated probe says only what is being retried.
            self._readiness = Probe(False, f"retrying {operation} ({type(error).__name__})")
        self.ready.set(0)

    def repair_started(self, scope: str, namespace: str) -> None:
        """A repair began; a namespace-wide one makes the worker unready until it ends."""
        if scope != "namespace":
            return
        with self._lock:
            self._last_iteration = time.monotonic()
            self._readiness = Probe(False, f"repairing read model namespace {namespace!r}")
        self.ready.set(0)

    def repair_progressed(self) -> None:
        """A running repair applied a batch: the worker is alive (and still not ready)."""
        self._last_iteration = time.monotonic()

    def repaired(self, scope: str) -> None:
        """Count a finished repair; readiness is refreshed at the loop's next iteration."""
        self.repairs.labels(scope).inc()
        self._last_refresh = 0.0

    def rebalanced(self, kind: str, partitions: set[TopicPartition]) -> None:
        """Record a partition assignment or revocation (see :class:`RebalanceListener`)."""
        self.rebalances.labels(kind).inc()
        self._last_refresh = 0.0  # refresh lag and readiness at the next iteration

    def loop_iterated(
        self, consumer: KafkaConsumer, unapplied: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        """Mark the loop alive; now and then refresh lag and readiness from ``consumer``.

        ``unapplied`` counts, per (topic, partition), records the consumer
        has polled but the worker has not applied yet (a batch still in
        Redis); they are lag too. Called from the worker's thread only:
        kafka-python consumers are not thread-safe, so the HTTP thread reads
        the snapshot taken here.
        """
        now = time.monotonic()
        self._last_iteration = now
        if now - self._last_refresh < REFRESH_INTERVAL_S:
            return
        self._last_refresh = now
        lags: dict[tuple[str, int], int | None] = {}
        for tp in consumer.assignment() or ():
            high = consumer.highwater(tp)
            position = consumer.position(tp, timeout_ms=0) if high is not None else None
            if position is not None and unapplied:
                position -= unapplied.get((tp.topic, tp.partition), 0)
            lags[(tp.topic, tp.partition)] = None if position is None else max(high - position, 0)
        for topic, partition in self._lags.keys() - lags.keys():
            self.lag.remove(topic, str(partition))  # revoked: another worker reports it now
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(-1 if lag is None else lag)
        self.assigned.set(len(lags))
        unknown = sorted(f"{t}-{p}" for (t, p), lag in lags.items() if lag is None)
        total = sum(lag for lag in lags.values() if lag is not None)
        if not lags:
            probe = Probe(False, "no partitions assigned")
        elif unknown:
            probe = Probe(False, f"end offsets not known yet for partitions {unknown}")
        elif total > self.ready_max_lag:
            probe = Probe(False, f"lag {total} exceeds {self.ready_max_lag}")
        else:
            probe = Probe(True, f"{len(lags)} partitions assigned, lag {total}")
        with self._lock:
            self._lags = lags
            self._readiness = probe
        self.ready.set(1 if probe.ok else 0)

    def stopped(self) -> None:
        """Mark the worker as out of its loop, so no longer ready."""
        with self._lock:
            self._readiness = Probe(False, "the projector stopped")
        self.ready.set(0)
        self.assigned.set(0)

    # -- read by the HTTP server -------------------------------------------

    def liveness(self) -> Probe:
        """Alive while the loop iterates (or is still starting)."""
        now = time.monotonic()
        last = self._last_iteration or self._started
        if now - last > self.stale_after_s:
            return Probe(False, f"the loop has not iterated for {now - last:.0f}s")
        return Probe(True, "the loop is iterating" if self._last_iteration else "starting")

    def readiness(self) -> Probe:
        """Ready while partitions are assigned and caught up within ``ready_max_lag``."""
        with self._lock:
            return self._readiness

    def exposition(self) -> tuple[bytes, str]:
        """Render the registry in the Prometheus text format; return it and its content type."""
        return self._prom.generate_latest(self.registry), str(self._prom.CONTENT_TYPE_LATEST)


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` of one :class:`ProjectorMetrics`.

    ``port=0`` picks a free port; read the chosen one from :attr:`port`.
    """

    def __init__(self, metrics: ProjectorMetrics, *, port: int, host: str = "127.0.0.1") -> None:
        self.metrics = metrics
        handler = _handler_for(metrics)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: {exc}; choose another --metrics-port"
            ) from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address the server is bound to."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="chatlog-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _handler_for(metrics: ProjectorMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = metrics.exposition()
                self._send(200, body, content_type)
            elif path in ("/healthz", "/readyz"):
                probe = metrics.liveness() if path == "/healthz" else metrics.readiness()
                body = json.dumps({"ok": probe.ok, "reason": probe.reason}).encode()
                self._send(200 if probe.ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would drown the worker's own logs.
            pass

    return Handler
