"""The projector as a long-running service: worker, metrics server and signal handling.

``chatlog projector run`` is :func:`run_service`. SIGTERM and SIGINT ask the
worker to stop: it finishes the batch in hand (apply, dead-letter, commit),
leaves the group and returns, and the process exits 0. Because offsets are
committed after every applied batch, nothing is redone after a clean stop,
and after a crash at most the last uncommitted batch is redelivered (and
skipped by the idempotent apply).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from chatlog.projector.gc_threshold import SERVICE_GC_THRESHOLD
from chatlog.projector.worker import Projector, ProjectorStats
from chatlog.secrets import mask_secrets
from chatlog.settings import Settings

log = logging.getLogger("chatlog.projector")


def run_service(
    settings: Settings,
    *,
    handle_signals: bool = True,
    on_started: Callable[[Projector, int | None], None] | None = None,
) -> ProjectorStats:
    """Run the projector until SIGTERM/SIGINT (or ``Projector.stop``); return its totals.

    With ``settings.metrics_port`` set, ``/metrics``, ``/healthz`` and
    ``/readyz`` are served on it while the worker runs (``0`` picks a free
    port). ``on_started`` receives the worker and the metrics port before the
    loop starts.

    Raises:
        ConfigurationError: metrics are asked for without prometheus-client, or the
            port is taken.
        BrokerUnavailableError: no broker answered.

    """
    metrics = None
    server = None
    if settings.metrics_port is not None:
        from chatlog.projector.metrics import MetricsServer, ProjectorMetrics

        metrics = ProjectorMetrics(ready_max_lag=settings.ready_max_lag)
        server = MetricsServer(metrics, port=settings.metrics_port, host=settings.metrics_host)
    worker = Projector(settings, metrics=metrics, gc_threshold=SERVICE_GC_THRESHOLD)
    if handle_signals and threading.current_thread() is threading.main_thread():

        def _stop(signum: int, frame: object) -> None:
            log.info("signal %s: finishing the current batch, then exiting", signum)
            worker.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        if server is not None:
            server.start()
            log.info(
                "serving /metrics, /healthz and /readyz on %s:%s",
                settings.metrics_host,
                server.port,
            )
        if on_started is not None:
            on_started(worker, server.port if server is not None else None)
        log.info(
            "connecting to Kafka at %s and Redis at %s",
            mask_secrets(settings.kafka_bootstrap_servers),
            mask_secrets(settings.redis_url),
        )
        log.info(
            "projecting %s into namespace %s",
            settings.topic,
            worker.namespace,
            extra={"topic": settings.topic, "group": settings.consumer_group},
        )
        worker.run()
    finally:
        if server is not None:
            server.stop()
    log.info("stopped after %s batches", worker.stats.batches)
    return worker.stats
