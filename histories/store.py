"""``ChatLog``: the entry point that hands out histories sharing one producer and pool."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import redis

from chatlog.errors import InvalidUserIdError
from chatlog.histories.history import ChatLogMessageHistory
from chatlog.histories.read_model import ReadModelReader
from chatlog.histories.read_your_writes import WrittenPositions
from chatlog.histories.sessions import SessionInfo, list_sessions
from chatlog.histories.target_reader import TargetSessionReader, open_session_reader
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.namespaces import ActiveNamespace
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.schemas.events import USER_EVENT_SESSION_ID, ChatEvent, SessionDeleted, UserDeleted
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.histories.checkpointer import ChatLogCheckpointSaver


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
        self.reader: ReadModelReader | TargetSessionReader = ReadModelReader(
            self.redis,
            self.settings.namespace,
            redis_url=None if redis_client is not None else self.settings.redis_url,
            active=ActiveNamespace.of(self.settings),
        )
        if self.settings.session_ttl_refresh_on_read and self.settings.session_ttl_s:
            self.reader.refresh_ttl_ms = int(self.settings.session_ttl_s * 1000)
        if self.settings.read_model:
            # CHATLOG_READ_MODEL: reads from the SQL or DynamoDB read model instead.
            self.reader = open_session_reader(self.settings.read_model) or self.reader
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
            session_ttl_s=self.settings.session_ttl_s,
        )

    def get_session_history(
        self, session_id: str, user_id: str | None = None
    ) -> ChatLogMessageHistory:
        """The factory for ``RunnableWithMessageHistory``.

        Pass it as ``get_session_history=chatlog.get_session_history``.

        ``RunnableWithMessageHistory`` matches its ``history_factory_config`` to
        these parameter names, so a config with ``session_id`` and ``user_id``
        fields works as well as the default one with ``session_id`` only.
        """
        return self.history(session_id, user_id)

    def checkpointer(self, *, read_timeout_s: float | None = None) -> ChatLogCheckpointSaver:
        """A LangGraph checkpointer sharing this ChatLog's producer and Redis pool.

        For ``create_agent(model, tools, checkpointer=chatlog.checkpointer())``
        or ``StateGraph.compile(checkpointer=...)``; needs the ``langgraph``
        extra. Closing the ChatLog closes what the saver shares.
        """
        # Imported here: langgraph is an optional extra.
        from chatlog.histories.checkpointer import ChatLogCheckpointSaver

        return ChatLogCheckpointSaver(
            self.settings,
            producer=self.producer,
            redis_client=self.redis,
            read_timeout_s=read_timeout_s,
        )

    # -- sessions and users -------------------------------------------------

    def sessions(self, user_id: str) -> list[SessionInfo]:
        """The sessions ``user_id`` owns, most recently active first, with counts and times.

        Raises:
            InvalidUserIdError: the user id is unusable.
            ReadModelError: Redis could not be read.
        """
        user = _required_user(user_id)
        if not isinstance(self.reader, ReadModelReader):
            return self.reader.list_sessions(user)
        return list_sessions(self.reader, user)

    def delete_session(self, session_id: str, user_id: str | None = None) -> None:
        """Publish ``SessionDeleted``: the projector removes every key of the session.

        The log keeps the events (it is immutable) but no read model, replay or
        rebuild shows the session again. A later write to the same id starts a
        new session. Returns once the broker acknowledged the event.

        Raises:
            SessionOwnershipError: the session belongs to another user (or to a
                user while ``user_id`` is ``None``); nothing is published.
        """
        self.history(session_id, user_id).delete()

    def delete_user(self, user_id: str) -> list[str]:
        """Delete every session ``user_id`` owns, then the user's session index.

        Publishes one ``SessionDeleted`` per session the read model lists for the
        user (so replays remove each session in its own partition), then one
        ``UserDeleted``. Sessions the projector has not seen yet are not
        listed: call this once the user's writes are projected. Returns the
        deleted session ids.
        """
        user_id = _required_user(user_id)
        session_ids = [info.session_id for info in self.sessions(user_id)]
        events = [
            ChatEvent(session_id, SessionDeleted(), user_id=user_id, source=self.settings.source)
            for session_id in session_ids
        ]
        events.append(
            ChatEvent(
                USER_EVENT_SESSION_ID, UserDeleted(), user_id=user_id, source=self.settings.source
            )
        )
        positions = self.producer.publish(events)
        # positions has one more entry (the UserDeleted event) than session_ids.
        for session_id, position in zip(session_ids, positions, strict=False):
            self.written.record(session_id, [position])
        return session_ids

    def close(self) -> None:
        """Flush and close the producer and the Redis pool (and async Redis clients)."""
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None
        self.reader.close()
        self.redis.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: the running loop's Redis client is closed before it returns."""
        await self.reader.aclose()
        self.close()

    def __enter__(self) -> ChatLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _required_user(user_id: object) -> str:
    """``user_id`` validated, where ``None`` is not allowed."""
    if user_id is None:
        raise InvalidUserIdError("a user id is required here; pass the user's id")
    validated = validate_user_id(user_id)
    assert validated is not None
    return validated
