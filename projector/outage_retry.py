"""Retrying the projector's Redis and dead-letter steps through an outage.

The projector never drops a batch because Redis or the dead-letter topic is
away: it backs off and tries again until the step succeeds or the worker is
asked to stop (then the batch is left uncommitted and comes again).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from chatlog.errors import ChatLogError, ReadModelError
from chatlog.projector.cluster_projection import TOPOLOGY_ERRORS

if TYPE_CHECKING:
    from chatlog.projector.metrics import ProjectorMetrics
    from chatlog.projector.stats import ProjectorStats

log = logging.getLogger("chatlog.projector")

#: Backoff bounds while Redis or the dead-letter topic is unreachable.
RETRY_MIN_S = 0.05
RETRY_MAX_S = 5.0


class OutageRetry:
    """Runs a step until it succeeds, backing off on outages; gives up only when stopped."""

    def __init__(
        self,
        stop: threading.Event,
        stats: ProjectorStats,
        metrics: ProjectorMetrics | None,
    ) -> None:
        self._stop = stop
        self.stats = stats
        self.metrics = metrics

    def __call__(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action`` until it succeeds; ``None`` if the worker stopped meanwhile."""
        delay = RETRY_MIN_S
        while True:
            try:
                return action()
            except (redis.ConnectionError, redis.TimeoutError, ReadModelError) as exc:
                error: Exception = exc
            except TOPOLOGY_ERRORS as exc:  # a Redis Cluster failing over or resharding
                error = exc
            except ChatLogError as exc:  # the dead-letter publish failed
                error = exc
            self.stats.retries += 1
            if self.metrics is not None:
                self.metrics.retried(what, error)
            log.warning("%s failed, retrying in %.2fs: %s", what, delay, error)
            if self.sleep(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_S)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; return whether the projector is stopping."""
        return self._stop.wait(seconds)
