"""A producer made on first use, its topics ensured first: :class:`LazyProducer`.

Making an :class:`~chatlog.producers.producer.EventProducer` blocks: the
topic admin creates the topic and waits for its metadata, and kafka-python's
producer bootstraps (a metadata round trip) in its constructor. Sync callers
pay that on their first write, as before. Async callers get it from
:meth:`LazyProducer.aget`, which runs the same work on a worker thread and
awaits it, so the first ``aadd_messages`` of a fresh process never stalls
its event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.settings import Settings


class LazyProducer:
    """Hands out one :class:`EventProducer`, made (and ``topics`` ensured) on first use.

    Args:
        settings: Connections, partitions and ``auto_create_topic``.
        topics: Topics ensured (when ``settings.auto_create_topic``) before the
            producer is first handed out.
        create: Makes the producer (default: ``EventProducer(settings)``).
        owned: Whether :meth:`close` closes the producer (``False`` for one
            another object shares and closes).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str],
        create: Callable[[], EventProducer] | None = None,
        owned: bool = True,
    ) -> None:
        self.settings = settings
        self.topics = tuple(topics)
        self.owned = owned
        self._create = create or (lambda: EventProducer(settings))
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, producer: EventProducer | LazyProducer | None, settings: Settings,
           *, topics: Sequence[str]) -> LazyProducer:
        """A lazy producer over what a caller passed in.

        ``None`` gives an owned producer of its own; an :class:`EventProducer`
        or a :class:`LazyProducer` is shared (not closed by this one), with
        ``topics`` ensured before its first use here.
        """
        if producer is None:
            return cls(settings, topics=topics)
        shared = producer
        get = shared.get if isinstance(shared, LazyProducer) else (lambda: shared)
        return cls(settings, topics=topics, create=get, owned=False)

    def get(self) -> EventProducer:
        """The producer, made on first use after ensuring the topics (blocking).

        Raises:
            TopicError: a topic could not be created.
            BrokerUnavailableError: no broker answered.
        """
        producer = self._producer
        if producer is not None:
            return producer
        with self._lock:
            if self._producer is None:
                if self.settings.auto_create_topic:
                    for topic in self.topics:
                        ensure_topic(
                            topic,
                            self.settings.partitions,
                            self.settings.replication_factor,
                            settings=self.settings,
                        )
                self._producer = self._create()
            return self._producer

    async def aget(self) -> EventProducer:
        """Async :meth:`get`: the first call's topic admin and bootstrap run on a thread."""
        producer = self._producer
        if producer is not None:
            return producer
        return await asyncio.to_thread(self.get)

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the producer if this object made it and owns it; a later :meth:`get` makes anew."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and self.owned:
            producer.close(timeout_s)
