"""``ChatLogMessageHistory``: a LangChain chat history backed by the event log."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chatlog.errors import (
    ChatLogError,
    ConcurrentAppendError,
    InvalidVersionError,
    PublishError,
)
from chatlog.histories.message_ids import assign_message_ids
from chatlog.histories.message_pages import MessagePage, check_page_arguments, message_page
from chatlog.histories.messages import from_stored, to_event
from chatlog.histories.read_model import ReadModelReader, SessionSnapshot, SessionVersion
from chatlog.histories.read_your_writes import (
    WrittenPositions,
    await_until_applied,
    projection_lag,
    repairing_error,
    wait_until_applied,
)
from chatlog.histories.sessions import (
    asession_owner,
    check_owner,
    session_owner,
    start_owner_read,
)
from chatlog.histories.target_reader import TargetSessionReader
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.keys import VERDICT_CONFLICT
from chatlog.producers.lazy import LazyProducer
from chatlog.producers.producer import EventProducer, LogPosition
from chatlog.schemas.events import (
    ChatEvent,
    MessagesAppended,
    Payload,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    new_events,
)
from chatlog.ttl import ttl_ms_of


class ChatLogMessageHistory(BaseChatMessageHistory):
    """Chat history of one session: appends go to Kafka, reads come from Redis.

    ``add_messages`` returns once the broker acknowledged every event of the
    call. Reads through the same object see that object's own writes
    (read-your-writes): they wait until the projector has applied them, up to
    ``read_timeout_s``, then raise :class:`~chatlog.errors.ProjectionLagError`.
    Other readers see the session eventually consistent.

    Usually obtained from :meth:`chatlog.ChatLog.history`.

    The ``a*`` methods never block the event loop: the owner check reads Redis
    through redis.asyncio, and the producer's first use (topic creation,
    bootstrap) and each hand-over of records to the Kafka client run on a
    worker thread.

    Args:
        session_id: The conversation; non-empty, at most 256 bytes, no control characters.
        producer: Publishes the events (a :class:`~chatlog.producers.lazy.LazyProducer`
            is made on the first write, not here).
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
        producer: EventProducer | LazyProducer,
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
        self._producers = (
            producer
            if isinstance(producer, LazyProducer)
            else LazyProducer.of(producer, producer.settings, topics=())
        )
        self.reader = reader
        self.read_timeout_s = read_timeout_s
        self.max_messages = max_messages
        self._written = written if written is not None else WrittenPositions(1)
        #: The deployment's idle TTL: a session this process wrote longer ago than
        #: this may have expired (meta and all), which is not projection lag.
        self.session_ttl_s = session_ttl_s
        self._owner_checked = False

    @property
    def producer(self) -> EventProducer:
        """The producer this history publishes with (made on first use)."""
        return self._producers.get()

    # -- writes ------------------------------------------------------------

    def _check_write_access(self) -> None:
        # Once the read model named this user as owner, only a deletion (by
        # the owner) can change that, so one check per history object suffices.
        if self._owner_checked:
            return
        if isinstance(self.reader, ReadModelReader):
            self._owner_seen(session_owner(self.reader, self.session_id))
        else:
            self._owner_seen(self.reader.read(self.session_id, limit=0).owner)

    async def _acheck_write_access(self) -> None:
        if self._owner_checked:
            return
        if isinstance(self.reader, ReadModelReader):
            self._owner_seen(await asession_owner(self.reader, self.session_id))
        else:
            self._owner_seen((await self.reader.aread(self.session_id, limit=0)).owner)

    def _owner_seen(self, owner: str | None) -> None:
        # A read saw the owner too: a read before the first write (what
        # RunnableWithMessageHistory does) spares that write its own owner check.
        check_owner(self.session_id, owner, self.user_id)
        self._owner_checked = self._owner_checked or owner is not None

    def _build(self, payloads: Sequence[Payload]) -> list[ChatEvent]:
        return new_events(self.session_id, payloads, user_id=self.user_id, source=self.source)

    def _events(self, payloads: Sequence[Payload]) -> list[ChatEvent]:
        """Events for ``payloads``, after checking that this user may write the session.

        Raises:
            SessionOwnershipError: the session belongs to another user (or to a
                user while this history has none); nothing is published.
        """
        self._check_write_access()
        return self._build(payloads)

    async def _aevents(self, payloads: Sequence[Payload]) -> list[ChatEvent]:
        """Async :meth:`_events`: the owner check reads Redis without blocking the loop."""
        await self._acheck_write_access()
        return self._build(payloads)

    def _remember(self, positions: Sequence[LogPosition]) -> None:
        self._written.record(self.session_id, positions, user_id=self.user_id)

    def add_messages(
        self, messages: Sequence[BaseMessage], *, expected_version: int | None = None
    ) -> None:
        """Append ``messages`` as one batch; return when the broker acknowledged all.

        Every message is validated and encoded before anything is published,
        so a bad message publishes nothing of the call. A message without an
        ``id`` gets a uuid4 *on the given object*; the projector appends an id
        the session already holds only once (the first content wins), so
        re-sending the same objects after a :class:`PublishError` is safe.

        With ``expected_version``, the call is one conditional event: the
        projector appends all of the messages if the session holds exactly
        ``expected_version`` messages when it applies it, else none; the call
        returns only after that verdict. With encryption on, a call whose
        subject is erased before the projector applies it appends nothing and
        returns (its verdict is "shredded").

        Raises:
            InvalidMessageError: an item is not a supported message.
            MessageSerializationError: a field is not JSON-serializable.
            MessageTooLargeError: an encoded message is over the size limit.
            InvalidVersionError: ``expected_version`` is not an int in 0..2**63-1.
            PublishError: the broker did not acknowledge in time (its
                ``message_ids`` are the call's ids).
            ConcurrentAppendError: the session held another number of messages.
            ProjectionLagError: no verdict on a conditional call within ``read_timeout_s``.
        """
        ids = assign_message_ids(messages)
        payloads = [to_event(m) for m in messages]
        if expected_version is None:
            if not payloads:
                self._check_write_access()
                return
            self._remember(self._checked_publish(payloads, ids))
            return
        version = _checked_version(expected_version)
        position = self._checked_publish([MessagesAppended(version, tuple(payloads))], ids)[0]
        self._remember([position])
        _verdict(
            wait_until_applied(
                lambda: self.reader.version(self.session_id, verdict_of=position.offset),
                _has_verdict,
                self._lag_error,
                self.read_timeout_s,
            ),
            self.session_id,
            version,
        )

    async def aadd_messages(
        self, messages: Sequence[BaseMessage], *, expected_version: int | None = None
    ) -> None:
        """Async :meth:`add_messages`; waits for acknowledgements without blocking the loop."""
        ids = assign_message_ids(messages)
        payloads = [to_event(m) for m in messages]
        if expected_version is None:
            events = await self._aevents(payloads)
            if events:
                self._remember(await self._apublish(events, ids))
            return
        version = _checked_version(expected_version)
        events = await self._aevents([MessagesAppended(version, tuple(payloads))])
        position = (await self._apublish(events, ids))[0]
        self._remember([position])
        _verdict(
            await await_until_applied(
                lambda: self.reader.aversion(self.session_id, verdict_of=position.offset),
                _has_verdict,
                self._lag_error,
                self.read_timeout_s,
            ),
            self.session_id,
            version,
        )

    def _checked_publish(
        self, payloads: Sequence[Payload], ids: tuple[str, ...]
    ) -> list[LogPosition]:
        """Publish ``payloads`` once this user may write the session (:meth:`_events`).

        The owner read is sent first and its reply read after the events are
        encoded, so its round trip overlaps the encoding; its verdict still
        comes first (a :class:`SessionOwnershipError` over any encoding error)
        and nothing is sent before it.
        """
        reply = None if self._owner_checked else self._start_owner_read()
        try:
            try:
                producer = self.producer
                records = [producer.encode(event) for event in self._build(payloads)]
            except BaseException:
                if reply is not None:
                    self._owner_seen(reply())
                raise
            if reply is not None:
                self._owner_seen(reply())
            return producer.send_encoded(producer.settings.topic, records)
        except PublishError as exc:
            exc.message_ids = ids
            raise

    def _start_owner_read(self) -> Callable[[], str | None]:
        reader = self.reader
        if isinstance(reader, ReadModelReader):
            return start_owner_read(reader, self.session_id)
        return lambda: reader.read(self.session_id, limit=0).owner

    def _publish(self, events: Sequence[ChatEvent], ids: tuple[str, ...]) -> list[LogPosition]:
        try:
            return self.producer.publish(events)
        except PublishError as exc:
            exc.message_ids = ids
            raise

    async def _apublish(
        self, events: Sequence[ChatEvent], ids: tuple[str, ...] = ()
    ) -> list[LogPosition]:
        try:
            producer = await self._producers.aget()
            return await producer.apublish(events)
        except PublishError as exc:
            exc.message_ids = ids
            raise

    @property
    def version(self) -> int:
        """The number of messages the session holds, after this object's own writes.

        One read-model round trip (more while waiting for the projector). Pass it
        as ``add_messages(..., expected_version=...)`` to append only if no
        one else appended in between.
        """
        return wait_until_applied(
            lambda: self.reader.version(self.session_id),
            self._caught_up,
            self._lag_error,
            self.read_timeout_s,
        ).version

    async def aget_version(self) -> int:
        """Async :attr:`version`."""
        snapshot = await await_until_applied(
            lambda: self.reader.aversion(self.session_id),
            self._caught_up,
            self._lag_error,
            self.read_timeout_s,
        )
        return snapshot.version

    def clear(self) -> None:
        """Publish ``SessionCleared``: every message so far is removed from the history.

        The messages stay in the log (it is immutable) but no read model,
        replay or rebuild shows them again.
        """
        self._remember(self.producer.publish(self._events([SessionCleared()])))

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        self._remember(await self._apublish(await self._aevents([SessionCleared()])))

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

        Raises:
            InvalidTtlError: ``ttl_s`` is not a finite number from 0 to 100 years.
        """
        ttl_ms = ttl_ms_of(ttl_s)
        self._remember(self.producer.publish(self._events([SessionTtlSet(ttl_ms)])))

    # -- reads ------------------------------------------------------------

    def _caught_up(self, snapshot: SessionSnapshot | SessionVersion) -> bool:
        if getattr(snapshot, "incomplete", None) is not None:
            return False  # wait for the repair rather than serve a shorter history
        self._owner_seen(snapshot.owner)
        return self._written.settled(self.session_id, snapshot, session_ttl_s=self.session_ttl_s)

    def _lag_error(self, snapshot: SessionSnapshot | SessionVersion) -> ChatLogError:
        incomplete = getattr(snapshot, "incomplete", None)
        if incomplete is not None:
            return repairing_error(f"session {self.session_id!r}", incomplete, self.read_timeout_s)
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
            ReadModelRepairingError: the session lost state and its repair outlasted
                the read timeout (a shorter history is never returned).
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

    def read(self, *, limit: int | None = None, before: int | None = None) -> MessagePage:
        """A page of the history: up to ``limit`` messages before position ``before``.

        Without arguments, every message (one page). Page backwards from the
        newest messages with ``next_before``::

            page = history.read(limit=50)
            while page.next_before is not None:
                page = history.read(limit=50, before=page.next_before)

        Waits for this object's own writes like :attr:`messages`.

        Raises:
            ValueError: ``limit`` is below 1 or ``before`` negative.
            SessionOwnershipError: the session belongs to another user.
            ProjectionLagError: this object's writes were not projected in time.
        """
        check_page_arguments(limit, before)
        reader = self.reader
        return message_page(
            wait_until_applied(
                lambda: reader.read_window(self.session_id, limit=limit, before=before),
                self._caught_up,
                self._lag_error,
                self.read_timeout_s,
            )
        )

    async def aread(self, *, limit: int | None = None, before: int | None = None) -> MessagePage:
        """Async :meth:`read`."""
        check_page_arguments(limit, before)
        reader = self.reader
        return message_page(
            await await_until_applied(
                lambda: reader.aread_window(self.session_id, limit=limit, before=before),
                self._caught_up,
                self._lag_error,
                self.read_timeout_s,
            )
        )

    def last(self, n: int) -> list[BaseMessage]:
        """The newest ``n`` messages, in log order; costs O(n) in Redis."""
        if n <= 0:
            return []
        return from_stored(self.snapshot(limit=n).messages)

    def __repr__(self) -> str:
        return f"ChatLogMessageHistory(session_id={self.session_id!r}, user_id={self.user_id!r})"


def _checked_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidVersionError(
            f"expected_version must be an int from 0 to 2**63 - 1 (a message count), got {value!r}"
        )
    return value


def _has_verdict(snapshot: SessionVersion) -> bool:
    return snapshot.verdict is not None


def _verdict(snapshot: SessionVersion, session_id: str, expected: int) -> None:
    """Raise :class:`ConcurrentAppendError` when the projector refused the conditional append."""
    verdict = snapshot.verdict or ""
    if verdict.startswith(VERDICT_CONFLICT):
        found = int(verdict[len(VERDICT_CONFLICT) :])
        raise ConcurrentAppendError(
            f"session {session_id!r} held {found} messages, not the expected {expected}: "
            "none of this call's messages were appended; read history.version, decide, "
            "and retry with it",
            expected=expected,
            found=found,
        )
