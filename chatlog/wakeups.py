"""Wake-ups: writers tell projectors where they just wrote (``CHATLOG_WAKEUP``).

Some Kafka-compatible brokers (the embedded Tansu) hold a fetch for its
whole wait even when records arrive, so a projector idling on a long wait
would see a new record only when the wait ends, and one polling on a short
wait pays for it in CPU while idle. A writer therefore publishes, after the
broker acknowledged its records, one Redis ``PUBLISH`` naming the
topic-partitions and newest offsets it wrote; a projector blocked on that
channel resumes its paused fetches and reads those partitions at once (see
:mod:`chatlog.projector.idle_pause` and :mod:`chatlog.projector.woken_fetch`).
The message is a hint only: the projector still applies exactly what it
reads from the log, from its own position, and a lost, late or forged
wake-up only changes when it reads.

This module holds the one definition of the channel and the message
(:func:`wakeup_channel`, :func:`encode_wakeup`, :func:`decode_wakeup`),
shared by the publishing writers and the listening projector, and the
writers' :class:`WakeupPublisher`.

``PUBLISH``, not Redis 7's ``SPUBLISH``: it works on every Redis and
Valkey version chatlog supports, on a standalone server and on a Redis
Cluster (where the cluster bus forwards it to every node, so a projector may
subscribe on any node); ``SPUBLISH`` would save that forwarding but needs
Redis 7 and a subscriber on the channel's shard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

from chatlog.redis_clients import open_redis
from chatlog.settings import Settings

log = logging.getLogger("chatlog.wakeups")

#: Shortest time between two rounds of PUBLISH from one producer: what is
#: acknowledged meanwhile leaves as one message per topic. A lone write is
#: announced at once; a busy writer sends at most ~500 rounds a second, so the
#: publishing thread takes little of its GIL.
PUBLISH_INTERVAL_S = 0.002

#: Prefix of the wake-up channels; the topic follows.
CHANNEL_PREFIX = "chatlog:wakeup:"


def wakeup_channel(topic: str) -> str:
    """The Redis pub/sub channel on which writes to ``topic`` are announced."""
    return CHANNEL_PREFIX + topic


def encode_wakeup(offsets: dict[int, int]) -> bytes:
    """The message naming each partition's newest written offset: ``b"3:41 7:12"``."""
    return " ".join(f"{p}:{o}" for p, o in offsets.items()).encode("ascii")


def decode_wakeup(message: bytes) -> dict[int, int]:
    """The partitions and offsets of a wake-up message; anything malformed is ignored.

    A channel anyone with ``PUBLISH`` rights can write to is not trusted: a
    bad message only costs a fetch that finds nothing, never an error.
    """
    offsets: dict[int, int] = {}
    for item in message.split():
        partition, _, offset = item.partition(b":")
        if partition.isdigit() and offset.isdigit():
            p, o = int(partition), int(offset)
            if o > offsets.get(p, -1):
                offsets[p] = o
    return offsets


class WakeupPublisher:
    """Publishes wake-ups for acknowledged writes, from a thread of its own.

    :meth:`acknowledged` only records the newest offset per topic-partition
    and returns: a writer's call never waits for Redis, and wake-ups that
    pile up while one ``PUBLISH`` is under way leave as one message per
    topic. The Redis connection and the thread are made on first use.

    A failed ``PUBLISH`` is not the writer's failure (its records are in the
    log; the projector reads them on its next fetch cycle), so it is not
    raised: a server that refuses the command (an ACL without ``PUBLISH``
    rights, a proxy without pub/sub) turns wake-ups off for this publisher
    with one warning; an unreachable server drops that round's wake-ups,
    and the next acknowledged write tries again.

    Args:
        settings: ``redis_url`` and ``redis_mode`` of the Redis to publish on.
        topics: Topics whose writes are announced; others are ignored.
        client_factory: Makes the Redis client (default: from ``settings``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Iterable[str],
        client_factory: Callable[[], redis.Redis] | None = None,
    ) -> None:
        self.topics = frozenset(topics)
        self._factory = client_factory or (
            lambda: open_redis(settings.redis_url, mode=settings.redis_mode)
        )
        self._client: redis.Redis | None = None
        self._pending: dict[str, dict[int, int]] = {}
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Whether wake-ups are still published (``False`` once the server refused one).
        self.enabled = True
        #: Messages published so far (for tests and benchmarks).
        self.published = 0

    @classmethod
    def of(cls, settings: Settings) -> WakeupPublisher | None:
        """The publisher ``settings`` ask for: ``None`` when ``CHATLOG_WAKEUP`` is off.

        Also ``None`` with a SQL or DynamoDB read model (``CHATLOG_READ_MODEL``):
        its projector listens on no Redis channel.
        """
        if not settings.wakeup or settings.read_model:
            return None
        return cls(settings, topics=(settings.topic, settings.checkpoint_topic))

    def acknowledged(self, topic: str, positions: Iterable[tuple[int, int]]) -> None:
        """Announce ``positions``, (partition, offset) pairs acknowledged on ``topic``."""
        if not self.enabled or topic not in self.topics:
            return
        with self._ready:
            if self._closed:
                return
            newest = self._pending.setdefault(topic, {})
            for partition, offset in positions:
                if offset > newest.get(partition, -1):
                    newest[partition] = offset
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="chatlog-wakeups", daemon=True
                )
                self._thread.start()
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending:
                    return
                pending, self._pending = self._pending, {}
            self._publish(pending)
            time.sleep(PUBLISH_INTERVAL_S)

    def _publish(self, pending: dict[str, dict[int, int]]) -> None:
        try:
            if self._client is None:
                self._client = self._factory()
            for topic, offsets in pending.items():
                self._client.publish(wakeup_channel(topic), encode_wakeup(offsets))
                self.published += 1
        except redis.ResponseError as exc:
            self.enabled = False
            log.warning(
                "Redis refused a wake-up PUBLISH (%s): wake-ups are off for this writer, "
                "and projectors see its writes on their next fetch cycle; grant PUBLISH "
                "on channel %s* or set CHATLOG_WAKEUP=false",
                exc,
                CHANNEL_PREFIX,
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.debug("wake-up not published, Redis unreachable: %s", exc)

    def close(self, timeout_s: float | None = 1.0) -> None:
        """Publish what is pending (up to ``timeout_s``; ``None``: until done), then close."""
        with self._ready:
            self._closed = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        if self._client is not None:
            self._client.close()
            self._client = None
