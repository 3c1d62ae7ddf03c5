"""A Kafka producer client that a failed send replaces: :class:`ReplaceableClient`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from chatlog.errors import PublishError

C = TypeVar("C")


class ReplaceableClient(Generic[C]):
    """Holds a transport's producer client and swaps in a fresh one after a failure.

    After a broker outage an idempotent producer can stay broken for good: a
    fenced or failed producer-epoch bump, expired in-flight batches, and every
    later record is refused (both kafka-python and librdkafka showed it in the
    broker-outage fault test). A send that timed out or was refused on a
    client marks it (:meth:`failed`); the next :meth:`current` creates a fresh
    client, with a fresh producer id, and discards the broken one, failing
    whatever it still held. Thread-safe.
    """

    def __init__(self, create: Callable[[], C], discard: Callable[[C], None]) -> None:
        self._create = create
        self._discard = discard
        self._lock = threading.Lock()
        self._broken = False
        self.closed = False
        #: The client sends go to now (read without the lock by a transport's own threads).
        self.client = create()

    def current(self) -> C:
        """The client to send on, replaced first if a failed send broke it.

        Raises:
            PublishError: the transport is closed.
        """
        with self._lock:
            if self.closed:
                raise PublishError("the producer is closed")
            if not self._broken:
                return self.client
            broken, self.client = self.client, self._create()
            self._broken = False
        self._discard(broken)
        return self.client

    def failed(self, client: C) -> None:
        """Mark ``client`` for replacement after a send on it timed out or was refused."""
        with self._lock:
            if self.client is client:
                self._broken = True

    def close(self) -> C | None:
        """Refuse every later :meth:`current`; return the client to release (None if closed)."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            return self.client
