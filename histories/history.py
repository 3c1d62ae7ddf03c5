"""``ChatLogMessageHistory``: a LangChain chat history backed by the event log."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chatlog.errors import ProjectionLagError
from chatlog.histories.messages import from_stored, to_event
from chatlog.histories.read_model import ReadModelReader, SessionSnapshot
from chatlog.histories.read_your_writes import (
    WrittenPositions,
    await_until_applied,
    projection_lag,
    wait_until_applied,
)
from chatlog.histories.sessions import check_owner, session_owner
from chatlog.histories.target_reader import TargetSessionReader
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.producers.producer import EventProducer, LogPosition
from chatlog.schemas.events import (
    ChatEvent,
    Payload,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
)


class ChatLogMessageHistory(BaseChatMessageHistory):
    """Chat history of one session: appends go to Kafka, reads come from Redis.

    ``add_messages`` returns once the broker acknowledged every event of the
    call. Reads through the same object see that object's own writes
    (read-your-writes): they wait until the projector has applied them, up to
    ``read_timeout_s``, then raise :class:`~chatlog.errors.ProjectionLagError`.
    Other readers see the session eventually consistent.

    Usually obtained from :meth:`chatlog.ChatLog.history`.

    Args:
        session_id: The conversation; non-empty, at most 256 bytes, no control characters.
        producer: Publishes the events.
        reader: Reads the Redis read model.
        user_id: The user the session belongs to, stamped on every event.
        source: Application name stamped on every event.
        read_timeout_s: How long a read waits for this object's own writes.
        max_messages: Read only the newest ``max_messages`` messages.
        written: Positions shared with other histories of the process (default: own).
    """

    def __init__(
        self,
        session_id: str,
        *,
        producer: EventProducer,
        reader: ReadModelReader | TargetSessionReader,
        user_id: str | None = None,
        source: str | None = None,
        read_timeout_s: float = 5.0,
        max_messages: int | None = None,
        written: WrittenPositions | None = None,
        session_ttl_s: float | None = None,
    ) -> None:
        self.session_id = validate_session_id(session_id)
        self.user_id = validate_user_id(user_id)
        self.source = source
        self.producer = producer
        self.reader = reader
        self.read_timeout_s = read_timeout_s
        self.max_messages = max_messages
        self._written = written if written is not None else WrittenPositions(1)
        #: The deployment's idle TTL: a session this process wrote longer ago than
        #: this may have expired (meta and all), which is not projection lag.
        self.session_ttl_s = session_ttl_s
        self._owner_checked = False

    # -- writes ------------------------------------------------------------

    def _check_write_access(self) -> None:
        # Once the read model named this user as owner, only a deletion (by
        # the owner) can change that, so one check per history object suffices.
        if self._owner_checked:
            return
        if isinstance(self.reader, ReadModelReader):
            owner = session_owner(self.reader, self.session_id)
        else:
            owner = self.reader.read(self.session_id, limit=0).owner
        check_owner(self.session_id, owner, self.user_id)
        self._owner_checked = owner is not None

    def _events(self, payloads: Sequence[Payload]) -> list[ChatEvent]:
        """Events for ``payloads``, after checking that this user may write the session.

        Raises:
            SessionOwnershipError: the session belongs to another user (or to a
                user while this history has none); nothing is published.
        """
        self._check_write_access()
        return [
            ChatEvent(self.session_id, payload, user_id=self.user_id, source=self.source)
            for payload in payloads
        ]

    def _remember(self, positions: Sequence[LogPosition]) -> None:
        self._written.record(self.session_id, positions)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` as one batch; return when the broker acknowledged all.

        Every message is validated and encoded before anything is published,
        so a bad message publishes nothing of the call.

        Raises:
            InvalidMessageError: an item is not a supported message.
            MessageSerializationError: a field is not JSON-serializable.
            MessageTooLargeError: an encoded message is over the size limit.
            PublishError: the broker did not acknowledge in time.
        """
        events = self._events([to_event(m) for m in messages])
        if events:
            self._remember(self.producer.publish(events))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async :meth:`add_messages`; waits for acknowledgements without blocking the loop."""
        events = self._events([to_event(m) for m in messages])
        if events:
            self._remember(await self.producer.apublish(events))

    def clear(self) -> None:
        """Publish ``SessionCleared``: every message so far is removed from the history.

        The messages stay in the log (it is immutable) but no read model,
        replay or rebuild shows them again.
        """
        self._remember(self.producer.publish(self._events([SessionCleared()])))

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        self._remember(await self.producer.apublish(self._events([SessionCleared()])))

    def delete(self) -> None:
        """Publish ``SessionDeleted``: the session's messages, meta and owner are removed.

        Unlike :meth:`clear`, the session stops existing (it leaves the
        owner's session list); a later write starts it afresh.

        Raises:
            SessionOwnershipError: the session belongs to another user.
        """
        self._remember(self.producer.publish(self._events([SessionDeleted()])))

    def set_ttl(self, ttl_s: float | None) -> None:
        """Give this session its own idle TTL (``0``: never expires; ``None``: the default).

        Published as a ``SessionTtlSet`` event, so replays honour it too.
        """
        ttl_ms = None if ttl_s is None else max(int(ttl_s * 1000), 0)
        self._remember(self.producer.publish(self._events([SessionTtlSet(ttl_ms)])))

    # -- reads ------------------------------------------------------------

    def _caught_up(self, snapshot: SessionSnapshot) -> bool:
        check_owner(self.session_id, snapshot.owner, self.user_id)
        if self._written.covered(self.session_id, snapshot):
            return True
        # Nothing at all in Redis: the idle TTL may have removed what we wrote.
        since = self._written.seconds_since_written(self.session_id)
        return (
            snapshot.partition is None
            and self.session_ttl_s is not None
            and since is not None
            and since > self.session_ttl_s
        )

    def _lag_error(self, snapshot: SessionSnapshot) -> ProjectionLagError:
        written = self._written.get(self.session_id)
        assert written is not None
        return projection_lag(
            f"session {self.session_id!r}",
            written,
            snapshot,
            read_model="read model",
            writer="history",
            timeout_s=self.read_timeout_s,
            hint="is a projector running and keeping up?",
        )

    def snapshot(self, *, limit: int | None = None) -> SessionSnapshot:
        """The session as stored, after waiting for this object's own writes.

        Raises:
            SessionOwnershipError: the session belongs to another user (or to a
                user while this history has none).
            ProjectionLagError: this object's writes were not projected in time.
        """
        return wait_until_applied(
            lambda: self.reader.read(self.session_id, limit=limit),
            self._caught_up,
            self._lag_error,
            self.read_timeout_s,
        )

    async def asnapshot(self, *, limit: int | None = None) -> SessionSnapshot:
        """Async :meth:`snapshot`."""
        return await await_until_applied(
            lambda: self.reader.aread(self.session_id, limit=limit),
            self._caught_up,
            self._lag_error,
            self.read_timeout_s,
        )

    @property
    def messages(self) -> list[BaseMessage]:
        """The session's messages in log order (the newest ``max_messages`` if set)."""
        return from_stored(self.snapshot(limit=self.max_messages).messages)

    @messages.setter
    def messages(self, value: list[BaseMessage]) -> None:
        raise AttributeError(
            "messages cannot be assigned: the history is an append-only log; "
            "use clear() and add_messages()"
        )

    async def aget_messages(self) -> list[BaseMessage]:
        """Async read of :attr:`messages`."""
        return from_stored((await self.asnapshot(limit=self.max_messages)).messages)

    def last(self, n: int) -> list[BaseMessage]:
        """The newest ``n`` messages, in log order; costs O(n) in Redis."""
        if n <= 0:
            return []
        return from_stored(self.snapshot(limit=n).messages)

    def __repr__(self) -> str:
        return f"ChatLogMessageHistory(session_id={self.session_id!r}, user_id={self.user_id!r})"
