"""``ChatLog``: the entry point that hands out histories sharing one producer and pool."""

from __future__ import annotations

import threading

import redis

from chatlog.histories.history import ChatLogMessageHistory, WrittenPositions
from chatlog.histories.read_model import ReadModelReader
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.namespaces import ActiveNamespace
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.settings import Settings


class ChatLog:
    """Chat histories on the event log; one per application process.

    Holds one Kafka producer and one Redis connection pool that every history
    it hands out shares. Use it as a context manager or call :meth:`close`::

        with ChatLog(Settings.from_env()) as chatlog:
            history = chatlog.history("session-1", user_id="alice")
            history.add_user_message("hi")

    With LangChain's ``RunnableWithMessageHistory``, pass
    :meth:`get_session_history` as the factory.

    Args:
        settings: Connections and topic; default ``Settings.from_env()``.
        redis_client: Redis client to read with (default: from ``settings.redis_url``).
    """

    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.Redis | None = None
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.redis = redis_client or redis.Redis.from_url(self.settings.redis_url)
        self.reader = ReadModelReader(
            self.redis,
            self.settings.namespace,
            redis_url=None if redis_client is not None else self.settings.redis_url,
            active=ActiveNamespace.of(self.settings),
        )
        self.written = WrittenPositions()
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> EventProducer:
        """The shared producer, created (and the topic ensured) on first use."""
        with self._lock:
            if self._producer is None:
                if self.settings.auto_create_topic:
                    ensure_topic(
                        self.settings.topic,
                        self.settings.partitions,
                        self.settings.replication_factor,
                        settings=self.settings,
                    )
                self._producer = EventProducer(self.settings)
            return self._producer

    def history(
        self,
        session_id: str,
        user_id: str | None = None,
        *,
        max_messages: int | None = None,
        read_timeout_s: float | None = None,
    ) -> ChatLogMessageHistory:
        """A history of ``session_id``, optionally owned by ``user_id``.

        Raises:
            InvalidSessionIdError: the session id is unusable (nothing is published).
            InvalidUserIdError: the user id is unusable.
        """
        validate_session_id(session_id)
        validate_user_id(user_id)
        return ChatLogMessageHistory(
            session_id,
            producer=self.producer,
            reader=self.reader,
            user_id=user_id,
            source=self.settings.source,
            read_timeout_s=read_timeout_s or self.settings.read_timeout_s,
            max_messages=max_messages,
            written=self.written,
        )

    def get_session_history(
        self, session_id: str, user_id: str | None = None
    ) -> ChatLogMessageHistory:
        """Factory for ``RunnableWithMessageHistory(..., get_session_history=chatlog.get_session_history)``.

        ``RunnableWithMessageHistory`` matches its ``history_factory_config`` to
        these parameter names, so a config with ``session_id`` and ``user_id``
        fields works as well as the default one with ``session_id`` only.
        """
        return self.history(session_id, user_id)

    def close(self) -> None:
        """Flush and close the producer and the Redis pool."""
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None
        self.redis.close()

    def __enter__(self) -> ChatLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
