"""The projector's ear for writers' wake-ups (:mod:`chatlog.wakeups`).

An idle projector blocks here, on its Redis pub/sub connection, instead of
polling Kafka on a short timeout; a wake-up names the topic-partitions
written and their newest offsets. Anything that goes wrong with the channel
(no pub/sub rights, Redis gone) only switches the listener off until its
next reconnect attempt: the worker then finds records by its fetch cycle.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from chatlog.redis_clients import open_redis
from chatlog.settings import Settings
from chatlog.wakeups import CHANNEL_PREFIX, decode_wakeup, wakeup_channel

log = logging.getLogger("chatlog.projector")

#: How long the listener waits before subscribing again after losing its channel.
RESUBSCRIBE_S = 5.0

#: Woken topic-partitions and the newest offset named for each.
Woken = dict[tuple[str, int], int]


class WakeupListener:
    """A Redis pub/sub subscription to the wake-up channels of ``topics``.

    Args:
        settings: ``redis_url`` and ``redis_mode`` of the Redis writers publish on.
        topics: Topics whose wake-ups are wanted.
        client_factory: Makes the Redis client (default: from ``settings``).
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        *,
        client_factory: Callable[[], redis.Redis] | None = None,
    ) -> None:
        self._factory = client_factory or (
            lambda: open_redis(settings.redis_url, mode=settings.redis_mode)
        )
        self._topics = {wakeup_channel(t).encode(): t for t in topics}
        self._client: redis.Redis | None = None
        self._pubsub: Any = None
        self._retry_at = 0.0
        #: Wake-up messages received so far (for tests and benchmarks).
        self.received = 0

    @property
    def active(self) -> bool:
        """Whether the subscription stands (wake-ups can arrive)."""
        return self._pubsub is not None

    def open(self) -> bool:
        """Subscribe (again); ``False`` when Redis refused or did not answer."""
        self._retry_at = time.monotonic() + RESUBSCRIBE_S
        try:
            if self._client is None:
                self._client = self._factory()
            pubsub = self._client.pubsub()
            pubsub.subscribe(*self._topics)
            # The confirmations are read here, so that a refusal (an ACL without
            # the channel) shows now rather than as a silent, deaf listener.
            for _ in self._topics:
                reply = pubsub.get_message(timeout=5.0)
                if reply is None or reply.get("type") not in ("subscribe", b"subscribe"):
                    raise redis.ConnectionError(f"no subscription confirmed: {reply!r}")
        except redis.RedisError as exc:
            log.warning(
                "wake-ups unavailable (%s); new records are found by the fetch cycle "
                "(CHATLOG_FETCH_MAX_WAIT_MS); subscribing again in %gs",
                exc,
                RESUBSCRIBE_S,
            )
            self._drop()
            return False
        self._pubsub = pubsub
        return True

    def wait(self, timeout_s: float) -> Woken:
        """Wake-ups received within ``timeout_s`` (and all already queued), merged.

        Returns at the first message (after draining what else is queued) or
        when the timeout passes; ``{}`` when there were none, or the
        subscription failed (the worker then falls back on its fetch cycle).
        """
        if self._pubsub is None:
            if time.monotonic() >= self._retry_at:
                self.open()
            return {}
        woken: Woken = {}
        try:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
            while message is not None:
                self._merge(woken, message)
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        except redis.RedisError as exc:
            log.warning("wake-up channel lost (%s); falling back on the fetch cycle", exc)
            self._drop()
            self._retry_at = time.monotonic() + RESUBSCRIBE_S
        return woken

    def _merge(self, woken: Woken, message: dict[str, Any]) -> None:
        if message.get("type") not in ("message", b"message"):
            return
        channel = message.get("channel")
        topic = self._topics.get(channel if isinstance(channel, bytes) else str(channel).encode())
        data = message.get("data")
        if topic is None or not isinstance(data, bytes):
            return
        self.received += 1
        for partition, offset in decode_wakeup(data).items():
            if offset > woken.get((topic, partition), -1):
                woken[(topic, partition)] = offset

    def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # The connection is being thrown away anyway.
            with contextlib.suppress(redis.RedisError):
                pubsub.close()

    def close(self) -> None:
        """Unsubscribe and close the connection."""
        self._drop()
        if self._client is not None:
            self._client.close()
            self._client = None


__all__ = ["CHANNEL_PREFIX", "RESUBSCRIBE_S", "WakeupListener", "Woken"]
