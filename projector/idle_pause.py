"""Pausing an idle worker's fetches, and resuming them when a writer's wake-up says so.

Some Kafka-compatible brokers (the embedded Tansu) hold a fetch for its whole
wait when no record is there at the request, even if one arrives meanwhile,
and answer at once when one is. A worker polling an idle topic on a short
wait therefore costs a good share of a core (kafka-python parses every empty
fetch response in Python), and one on a long wait sees a new record late.
With wake-ups (:mod:`chatlog.wakeups`) an idle worker pauses its partitions
(no fetch goes out) and blocks on the wake-up channel instead; a wake-up
naming one of its partitions resumes them, and the fetch that follows finds
the acknowledged records there and comes back at once. The records still
come from the group consumer, from its own positions: a wake-up changes when
the worker fetches, never what it applies. Every :data:`LOOK_EVERY_S` a
paused worker resumes anyway for one fetch cycle, so a write no wake-up
announced (a writer with wake-ups off, a lost message) is still projected.
"""

from __future__ import annotations

import time
from typing import Any

from chatlog.projector.stats import ProjectorStats
from chatlog.projector.wakeup_listener import WakeupListener, Woken

#: How long a worker finds no record before it pauses its partitions.
PAUSE_AFTER_S = 0.05
#: How long a paused worker blocks on its wake-up channel at a time (it then
#: polls its group consumer once, which keeps a rebalance moving).
IDLE_WAKEUP_WAIT_S = 0.1
#: Above this rate (records per second from the group consumer, over
#: :data:`STREAMING_WINDOW_S`) the worker is streaming: its group consumer
#: already finds new records at once, and a woken fetch would only make the
#: broker read them twice (at 1k msg/s on the embedded broker: visible p50
#: 182 ms with woken fetches, 106 without).
STREAMING_RATE = 300
STREAMING_WINDOW_S = 0.2

#: How long a poll of an idle, listening worker waits for its group consumer;
#: the rest of its idle step it waits on the wake-up channel (LISTEN_S), so a
#: wake-up is seen at once rather than after a Kafka poll's wait. Not 0: a
#: kafka-python rebalance moves on only within a poll's wait.
LISTENING_POLL_MS = 1
LISTEN_S = 0.009

#: How often a paused worker resumes for one fetch cycle without a wake-up:
#: the longest an unannounced write waits beyond the fetch.
LOOK_EVERY_S = 0.5


class IdlePause:
    """Pauses a worker's partitions while it is idle and resumes them on a wake-up.

    Args:
        listener: The worker's subscription to the wake-up channels.
        stats: Where resumes are counted.
    """

    def __init__(self, listener: WakeupListener, stats: ProjectorStats) -> None:
        self.listener = listener
        self.stats = stats
        #: Whether this worker paused its partitions (a rebalance may have resumed them).
        self.paused = False
        self._idle_since: float | None = None
        self._look_at = 0.0
        self._window_began = 0.0
        self._window_records = 0
        self._streaming = False

    @property
    def streaming(self) -> bool:
        """Whether the group consumer delivered over :data:`STREAMING_RATE` in the last window."""
        return self._streaming

    def polled(self, records: int) -> None:
        """Count the records one poll of the group consumer returned."""
        now = time.monotonic()
        self._window_records += records
        if now - self._window_began >= STREAMING_WINDOW_S:
            rate = self._window_records / max(now - self._window_began, STREAMING_WINDOW_S)
            self._streaming = rate > STREAMING_RATE
            self._window_began, self._window_records = now, 0

    @property
    def listening(self) -> bool:
        """Whether the worker's idle steps wait on the wake-up channel (not on Kafka)."""
        return self.listener.active and not self.paused

    def after_poll(self, consumer: Any, *, records: bool, busy: bool) -> Woken:
        """Decide after one poll: stay fetching, pause, wait for a wake-up, or resume.

        ``records``: the poll returned records; ``busy``: a batch is in Redis.
        Returns the wake-ups received meanwhile (the worker fetches what they
        name at once).
        """
        assigned = consumer.assignment()
        if not assigned:
            return {}
        if records or busy or not self.listener.active:
            # Fetching: what wake-ups say is fetched anyway. A listener that
            # lost its channel leaves the worker on its plain fetch cycle
            # (wait(0) subscribes again when it is time).
            if self.paused:
                self._resume(consumer, assigned)
            self._idle_since = None
            return self.listener.wait(0)
        now = time.monotonic()
        if self.paused:
            woken = self.listener.wait(IDLE_WAKEUP_WAIT_S)
            if any((tp.topic, tp.partition) in woken for tp in assigned):
                self.stats.woken += 1
                self._resume(consumer, assigned)
            elif time.monotonic() >= self._look_at:
                self._resume(consumer, assigned)
            return woken
        woken = self.listener.wait(LISTEN_S)
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= PAUSE_AFTER_S:
            consumer.pause(*assigned)
            self.paused = True
            self._look_at = now + LOOK_EVERY_S
        return woken

    def _resume(self, consumer: Any, assigned: set[Any]) -> None:
        consumer.resume(*assigned)
        self.paused = False
        self._idle_since = time.monotonic()
