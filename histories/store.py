"""``ChatLog``: the entry point that hands out histories sharing one producer and pool."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple, overload

import redis

from chatlog.errors import InvalidUserIdError, ProjectionLagError
from chatlog.eviction_guard import guard_eviction
from chatlog.histories.erasure import ErasureReport
from chatlog.histories.history import ChatLogMessageHistory
from chatlog.histories.read_model import ReadModelReader
from chatlog.histories.read_your_writes import (
    WrittenPositions,
    await_until_applied,
    projection_lag,
    wait_until_applied,
)
from chatlog.histories.session_pages import SessionPage, sessions_page
from chatlog.histories.sessions import (
    SessionInfo,
    SessionPosition,
    alist_sessions,
    asession_positions,
    list_sessions,
    session_positions,
)
from chatlog.histories.target_reader import TargetSessionReader, open_session_reader
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.namespaces import ActiveNamespace
from chatlog.producers.lazy import LazyProducer
from chatlog.producers.producer import EventProducer
from chatlog.redis_clients import open_redis
from chatlog.schemas.events import USER_EVENT_SESSION_ID, ChatEvent, SessionDeleted, UserDeleted
from chatlog.session_scope import new_session_id, scoped_session_id, unscoped_session_id
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
        self.redis = redis_client or open_redis(
            self.settings.redis_url, mode=self.settings.redis_mode
        )
        self.reader = ReadModelReader(
            self.redis,
            self.settings.namespace,
            redis_url=None if redis_client is not None else self.settings.redis_url,
            active=ActiveNamespace.of(self.settings),
        )
        if self.settings.session_ttl_refresh_on_read and self.settings.session_ttl_s:
            self.reader.refresh_ttl_ms = int(self.settings.session_ttl_s * 1000)
        guard_eviction(self.redis, self.settings)
        #: Where histories read: Redis, or the SQL/DynamoDB store of CHATLOG_READ_MODEL.
        self.session_reader: ReadModelReader | TargetSessionReader = self.reader
        if self.settings.read_model:
            self.session_reader = open_session_reader(self.settings.read_model) or self.reader
        self.written = WrittenPositions()
        #: Made on first use; histories and savers hold this, not the producer, so
        #: handing them out never blocks and async callers make it off the loop.
        self.producers = LazyProducer(self.settings, topics=(self.settings.topic,))

    @property
    def producer(self) -> EventProducer:
        """The shared producer, created (and the topic ensured) on first use."""
        return self.producers.get()

    def history(
        self,
        session_id: str,
        user_id: str | None = None,
        *,
        max_messages: int | None = None,
        read_timeout_s: float | None = None,
    ) -> ChatLogMessageHistory:
        """A history of ``session_id``, optionally owned by ``user_id``.

        With ``Settings.scope_sessions_by_user`` the session is ``user_id``'s own
        ``session_id`` (stored under :func:`~chatlog.session_scope.scoped_session_id`,
        which is the history's ``session_id``), and ``user_id`` is required.

        Raises:
            InvalidSessionIdError: the session id is unusable (nothing is published).
            InvalidUserIdError: the user id is unusable (or missing, when scoped).
        """
        validate_session_id(session_id)
        validate_user_id(user_id)
        return ChatLogMessageHistory(
            self.stored_session_id(session_id, user_id),
            producer=self.producers,
            reader=self.session_reader,
            user_id=user_id,
            source=self.settings.source,
            read_timeout_s=read_timeout_s or self.settings.read_timeout_s,
            max_messages=max_messages,
            written=self.written,
            session_ttl_s=self.settings.session_ttl_s,
        )

    def new_session(self, user_id: str, *, prefix: str = "") -> str:
        """A new session id for ``user_id`` that nobody can guess (128 random bits).

        Nothing is published: the session starts, owned by ``user_id``, with its
        first write (``chatlog.history(session_id, user_id)``). Since no one
        else can know the id before then, no one can claim the session first
        or squat on it. ``prefix`` (``"support-"``) only helps people read ids.

        Raises:
            InvalidUserIdError: the user id is unusable.
            InvalidSessionIdError: the prefix makes the id unusable.
        """
        _required_user(user_id)
        return new_session_id(prefix)

    def stored_session_id(self, session_id: str, user_id: str | None) -> str:
        """The id ``user_id``'s ``session_id`` has on the log and in the read model.

        ``session_id`` itself, unless ``Settings.scope_sessions_by_user`` is on.

        Raises:
            InvalidUserIdError: scoping is on and ``user_id`` is ``None``.
            InvalidSessionIdError: the scoped id would be too long.
        """
        if self.settings.scope_sessions_by_user:
            return scoped_session_id(user_id, session_id)
        return session_id

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
            producer=self.producers,
            redis_client=self.redis,
            read_timeout_s=read_timeout_s,
        )

    # -- sessions and users -------------------------------------------------

    @overload
    def sessions(self, user_id: str) -> list[SessionInfo]: ...

    @overload
    def sessions(
        self, user_id: str, *, limit: int, cursor: str | None = None
    ) -> SessionPage: ...

    def sessions(
        self, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> list[SessionInfo] | SessionPage:
        """The sessions ``user_id`` owns, most recently active first, with counts and times.

        Without ``limit``, every session, as a list. With ``limit``, one
        :class:`~chatlog.histories.session_pages.SessionPage` of at most
        ``limit`` sessions; pass its ``next_cursor`` back as ``cursor`` for the
        next, until it is ``None``::

            page = chatlog.sessions("alice", limit=50)
            while page.next_cursor:
                page = chatlog.sessions("alice", limit=50, cursor=page.next_cursor)

        Like every read, it first waits (up to ``settings.read_timeout_s``) for
        this ChatLog's own writes of the user's sessions to be projected, so a
        session it just created (or deleted) is listed (or gone) at once.

        Raises:
            InvalidUserIdError: the user id is unusable.
            InvalidCursorError: ``cursor`` is not a ``next_cursor`` of a page.
            ProjectionLagError: this ChatLog's writes were not projected in time.
            ReadModelRepairingError: the projector was still repairing the namespace
                after ``settings.read_timeout_s`` (a listing never shows it half-rebuilt).
            ReadModelError: Redis could not be read.
        """
        user_id = _required_user(user_id)
        if limit is None and cursor is not None:
            raise ValueError("cursor needs limit: pass the page size too")
        if not isinstance(self.session_reader, ReadModelReader):
            return self._target_sessions(self.session_reader, user_id, limit, cursor)
        own = self.written.sessions_of(user_id)
        if own:
            wait_until_applied(
                lambda: self._first_unsettled(own, session_positions(self.reader, own)),
                _settled,
                partial(self._listing_lag, user_id),
                self.settings.read_timeout_s,
            )
        shown_as = self._shown_as(user_id)
        reader = self.reader
        # A listing takes several round trips: none of them may see a repair half-way.
        if limit is None:
            return reader.outside_repair(
                lambda: list_sessions(reader, user_id, shown_as=shown_as),
                f"the sessions of user {user_id!r}",
                self.settings.read_timeout_s,
            )
        page_size = limit
        return reader.outside_repair(
            lambda: sessions_page(
                reader, user_id, limit=page_size, cursor=cursor, shown_as=shown_as
            ),
            f"the sessions of user {user_id!r}",
            self.settings.read_timeout_s,
        )

    @overload
    async def asessions(self, user_id: str) -> list[SessionInfo]: ...

    @overload
    async def asessions(
        self, user_id: str, *, limit: int, cursor: str | None = None
    ) -> SessionPage: ...

    async def asessions(
        self, user_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> list[SessionInfo] | SessionPage:
        """Async :meth:`sessions` (a page is read on a worker thread, off the loop)."""
        user_id = _required_user(user_id)
        if limit is None and cursor is not None:
            raise ValueError("cursor needs limit: pass the page size too")
        if not isinstance(self.session_reader, ReadModelReader):
            return await asyncio.to_thread(
                self._target_sessions, self.session_reader, user_id, limit, cursor
            )
        own = self.written.sessions_of(user_id)
        if own:

            async def read() -> Unsettled:
                return self._first_unsettled(own, await asession_positions(self.reader, own))

            await await_until_applied(
                read, _settled, partial(self._listing_lag, user_id), self.settings.read_timeout_s
            )
        shown_as = self._shown_as(user_id)
        reader = self.reader
        subject = f"the sessions of user {user_id!r}"
        if limit is None:
            return await reader.aoutside_repair(
                lambda: alist_sessions(reader, user_id, shown_as=shown_as),
                subject,
                self.settings.read_timeout_s,
            )
        page_size = limit
        return await asyncio.to_thread(
            lambda: reader.outside_repair(
                lambda: sessions_page(
                    reader, user_id, limit=page_size, cursor=cursor, shown_as=shown_as
                ),
                subject,
                self.settings.read_timeout_s,
            )
        )

    def _target_sessions(
        self, target: TargetSessionReader, user_id: str, limit: int | None, cursor: str | None
    ) -> list[SessionInfo] | SessionPage:
        """:meth:`sessions` from a SQL or DynamoDB read model (``CHATLOG_READ_MODEL``)."""
        own = self.written.sessions_of(user_id)
        if own:

            def positions() -> list[SessionPosition]:
                versions = (target.version(session_id) for session_id in own)
                return [SessionPosition(v.partition, v.offset) for v in versions]

            wait_until_applied(
                lambda: self._first_unsettled(own, positions()),
                _settled,
                partial(self._listing_lag, user_id),
                self.settings.read_timeout_s,
            )
        shown_as = self._shown_as(user_id)
        if limit is None:
            return _shown(target.list_sessions(user_id), shown_as)
        page = target.sessions_page(user_id, limit=limit, cursor=cursor)
        return SessionPage(_shown(page.sessions, shown_as), page.next_cursor)

    def _shown_as(self, user_id: str) -> Callable[[str], str | None]:
        if not self.settings.scope_sessions_by_user:
            return lambda stored: stored
        return lambda stored: unscoped_session_id(user_id, stored)

    def _first_unsettled(self, ids: list[str], positions: list[SessionPosition]) -> Unsettled:
        """The first of ``ids`` whose read lacks this ChatLog's write, or a settled marker."""
        for session_id, position in zip(ids, positions, strict=True):
            if not self.written.settled(
                session_id, position, session_ttl_s=self.settings.session_ttl_s
            ):
                return Unsettled(session_id, position.partition, position.offset)
        return Unsettled(None, None, -1)

    def _listing_lag(self, user_id: str, state: Unsettled) -> ProjectionLagError:
        assert state.session_id is not None
        written = self.written.get(state.session_id)
        assert written is not None
        return projection_lag(
            f"the sessions of user {user_id!r} (session {state.session_id!r})",
            written,
            state,
            read_model="read model",
            writer="ChatLog",
            timeout_s=self.settings.read_timeout_s,
            hint="is a projector running and keeping up?",
        )

    def delete_session(self, session_id: str, user_id: str | None = None) -> None:
        """Publish ``SessionDeleted``: the projector removes every key of the session.

        The log keeps the events (it is immutable) but no read model, replay or
        rebuild shows the session again. A later write to the same id starts a
        new session. Returns once the broker acknowledged the event.

        With encryption on and no ``user_id``, the session's data keys are then
        destroyed: its events in the log are unreadable from then on (a
        session with a user shares the user's key: :meth:`delete_user` erases it).

        Raises:
            SessionOwnershipError: the session belongs to another user (or to a
                user while ``user_id`` is ``None``); nothing is published.
        """
        self.history(session_id, user_id).delete()
        if user_id is None:
            self._shred(self.stored_session_id(session_id, None))

    def delete_user(self, user_id: str) -> list[str]:
        """Delete every session ``user_id`` owns, then the user's session index.

        Publishes one ``SessionDeleted`` per session the read model lists for the
        user (so replays remove each session in its own partition), then one
        ``UserDeleted``. Sessions the projector has not seen yet are not
        listed: call this once the user's writes are projected. Returns the
        deleted session ids (as the application names them, also when scoped).

        With encryption on, the user's data keys are then destroyed
        (:meth:`erase_user` reports it): every event the user wrote, projected
        or not, is unreadable in the log and its backups from then on.
        """
        return self.erase_user(user_id).sessions

    def erase_user(self, user_id: str) -> ErasureReport:
        """:meth:`delete_user`, with a report of what was shredded (``chatlog erase --user``).

        The tombstones are published first, then the user's data keys are
        destroyed, so a crash in between leaves a deleted user whose keys a
        second call destroys.
        """
        user_id = _required_user(user_id)
        session_ids = [info.session_id for info in self.sessions(user_id)]
        stored_ids = [self.stored_session_id(s, user_id) for s in session_ids]
        events = [
            ChatEvent(session_id, SessionDeleted(), user_id=user_id, source=self.settings.source)
            for session_id in stored_ids
        ]
        # Hook for the checkpointer (issue 17 item 5): the user's LangGraph
        # threads are deleted alongside, from this same call.
        events.append(
            ChatEvent(
                USER_EVENT_SESSION_ID, UserDeleted(), user_id=user_id, source=self.settings.source
            )
        )
        positions = self.producer.publish(events)
        # positions has one more entry (the UserDeleted event) than session_ids.
        for session_id, position in zip(stored_ids, positions, strict=False):
            self.written.record(session_id, [position], user_id=user_id)
        self._delete_user_threads(user_id)
        return ErasureReport(
            user_id,
            session_ids,
            # The sessions' own keys too: events a session received before a
            # user claimed it were sealed under the session, not the user.
            self._shred(user_id, *stored_ids),
            encrypted=self.producer.key_store is not None,
        )

    def _shred(self, *subjects: str) -> list[str]:
        """Destroy the data keys of ``subjects`` (nothing when encryption is off); their ids."""
        key_store = self.producer.key_store
        return [] if key_store is None else key_store.destroy(*subjects)

    def _delete_user_threads(self, user_id: str) -> None:
        """The user's LangGraph threads go too (``ChatLogCheckpointSaver.delete_user_threads``)."""
        try:
            saver = self.checkpointer()
        except ImportError:
            return  # without the langgraph extra no thread can exist
        try:
            saver.delete_user_threads(user_id)
        finally:
            saver.close()  # closes only what the saver opened, not the shared producer

    def close(self) -> None:
        """Flush and close the producer and the Redis pool (and async Redis clients)."""
        self.producers.close()
        self.reader.close()
        if self.session_reader is not self.reader:
            self.session_reader.close()
        self.redis.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: the running loop's Redis client is closed before it returns.

        The producer's flush and the sync pool's close run on a worker thread.
        """
        await self.reader.aclose()
        if self.session_reader is not self.reader:
            await self.session_reader.aclose()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> ChatLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Unsettled(NamedTuple):
    """The first own-written session a listing still waits for (``session_id`` ``None``: none)."""

    session_id: str | None
    partition: int | None
    offset: int


def _settled(state: Unsettled) -> bool:
    return state.session_id is None


def _required_user(user_id: object) -> str:
    """``user_id`` validated, where ``None`` is not allowed."""
    if user_id is None:
        raise InvalidUserIdError("a user id is required here; pass the user's id")
    validated = validate_user_id(user_id)
    assert validated is not None
    return validated


def _shown(
    sessions: list[SessionInfo], shown_as: Callable[[str], str | None]
) -> list[SessionInfo]:
    """``sessions`` under the ids the caller sees; those ``shown_as`` hides are left out."""
    shown = []
    for info in sessions:
        session_id = shown_as(info.session_id)
        if session_id is not None:
            shown.append(dataclasses.replace(info, session_id=session_id))
    return shown
