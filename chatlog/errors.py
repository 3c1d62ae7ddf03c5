"""The chatlog exception hierarchy: every error chatlog raises is a :class:`ChatLogError`.

Third-party errors (kafka-python, redis-py, fastavro) are re-raised as one of
these with the original chained (``raise ... from exc``), so application code
needs to catch only this hierarchy.
"""

from __future__ import annotations


class ChatLogError(Exception):
    """Root of every error raised by chatlog."""


class ConfigurationError(ChatLogError, ValueError):
    """Raised when a setting is missing or malformed; the message names the setting."""


class InvalidSessionIdError(ChatLogError, ValueError):
    """Raised when a session id is empty, too long, not a string or holds control characters.

    Nothing is published when this is raised.
    """


class InvalidUserIdError(ChatLogError, ValueError):
    """Raised when a user id is empty, too long, not a string or holds control characters."""


class InvalidMessageError(ChatLogError, TypeError):
    """Raised when an object given as a message is not a supported ``BaseMessage``.

    Also when a message cannot be stored as it is: a field of the wrong type,
    text with a lone surrogate, or a structure nested deeper than
    ``chatlog.histories.storable.MAX_NESTING``. Nothing of the call that
    passed it is published.
    """


class MessageSerializationError(ChatLogError, ValueError):
    """Raised when a message holds a value that cannot be stored loss-free as JSON.

    Typical causes: objects in ``additional_kwargs``, ``response_metadata`` or
    ``artifact`` that are not JSON types, ``NaN`` or infinities, reference
    cycles, non-string keys. Nothing of the call is published.
    """


class MessageTooLargeError(ChatLogError, ValueError):
    """Raised when one encoded event exceeds ``Settings.max_event_bytes``.

    Nothing of the call is published; split the content or raise the limit
    (and the broker's ``message.max.bytes``) together.
    """


class CheckpointTooLargeError(MessageTooLargeError):
    """Raised when a checkpoint or write call is too large even compressed and split.

    It is over ``Settings.max_checkpoint_bytes``, or ``max_event_bytes`` is too
    small to split it. Nothing of the call is published. ``channel`` names the largest channel
    value of the call; keep less state in it (or raise
    ``CHATLOG_MAX_CHECKPOINT_BYTES``).
    """

    def __init__(self, message: str, *, channel: str) -> None:
        super().__init__(message)
        self.channel = channel


class EventDecodeError(ChatLogError, ValueError):
    """Raised when bytes are not a chatlog event: bad magic, unknown schema or corrupt body."""


class UnsafeInputError(ChatLogError, ValueError):
    """Raised when input is in a format chatlog refuses to load, such as pickle."""


class PublishError(ChatLogError):
    """Raised when the broker did not acknowledge an append within the publish timeout.

    The append may or may not be in the log; it was not acknowledged, so it is
    never reported as a success. Retrying is safe for messages: every message
    carries an id (chatlog assigns a uuid4 to a message without one, on the
    caller's object), and the projector appends an id a session already holds
    only once, so re-sending the same message objects ends with each message
    once. ``message_ids`` lists the ids of the call, for a caller that builds
    new objects to retry.
    """

    #: The message ids of the failed call (empty for non-message events).
    message_ids: tuple[str, ...] = ()


class BrokerUnavailableError(PublishError):
    """Raised when no Kafka broker can be reached within the configured timeout."""


class RecordTooLargeError(PublishError):
    """Raised when the Kafka client or the broker refuses a record as too large.

    The limits are the producer's ``max_request_size`` (``max_event_bytes``
    plus room for the record's key and headers) and the broker's
    ``message.max.bytes`` or the topic's ``max.message.bytes``. Sending the
    same record again can never succeed, so nothing retries it; the record
    was not written (records before it in the same call may have been).
    Shrink the record, or raise the limits together.
    """


class TopicError(ChatLogError):
    """Raised when the topic is missing, cannot be created or has an unsafe layout."""


class ReadModelError(ChatLogError):
    """Raised when the Redis read model cannot be read or written."""


class ProjectionLagError(ChatLogError, TimeoutError):
    """Raised when a read waits for its own writes longer than the read timeout.

    The message says how many events the projection is behind. Check that a
    projector is running (``chatlog projector run``) and keeping up.
    """

    def __init__(self, message: str, *, lag: int, partition: int) -> None:
        super().__init__(message)
        self.lag = lag
        self.partition = partition


class ConcurrentAppendError(ChatLogError):
    """Raised when an ``add_messages(..., expected_version=n)`` found another version.

    The session did not hold exactly ``expected`` messages when the projector
    applied the call, so none of its messages were appended. Read the
    history again (``history.version``), decide, and retry with the version found.
    """

    def __init__(self, message: str, *, expected: int, found: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class InvalidVersionError(ChatLogError, ValueError):
    """Raised when an ``expected_version`` is not an int from 0 to 2**63 - 1."""


class InvalidTtlError(ChatLogError, ValueError):
    """Raised when a TTL is not a finite, non-negative number of at most 100 years."""

class ReadModelRepairingError(ChatLogError, TimeoutError):
    """Raised when a read finds its session incomplete and the repair outlasts the read timeout.

    The read model lost state (a Redis restart without persistence, a flush,
    an eviction, a stray ``DEL``) and the projector is rebuilding it from the
    log; a read never serves the shorter history meanwhile. Retry the read
    later, check that a projector is running (``chatlog projector run``; it
    repairs what it detects), or raise ``CHATLOG_READ_TIMEOUT``.
    """


class SessionOwnershipError(ChatLogError, PermissionError):
    """Raised when a session is read or written under a user id that does not own it."""


class ThreadOwnershipError(SessionOwnershipError):
    """Raised when a LangGraph thread is read or written under a user id that does not own it.

    The thread's owner is the first ``config["configurable"]["user_id"]`` that
    wrote it; use that user's config, or another thread id.
    """


class EmbeddedStackError(ChatLogError):
    """Raised when the embedded broker or Redis server cannot be started."""


class ConsumerGroupError(ChatLogError):
    """Raised when a consumer group's committed offsets or members cannot be read.

    Check that the broker is reachable and that the configured principal may
    describe the group (``CHATLOG_CONSUMER_GROUP``).
    """


class ReplayError(ChatLogError):
    """Raised when a replay, rebuild or verify cannot run as asked; the message says why."""


class NamespaceInUseError(ReplayError):
    """Raised when a namespace is in use: dropping the active one, or rebuilding it in place.

    Rebuild another namespace and switch readers to it first.
    """


class UnsafeCheckpointValueError(UnsafeInputError):
    """Raised when a stored checkpoint value names a type outside the serializer's allowlist.

    Nothing the value names was imported or called. Someone wrote the value
    outside LangGraph's own serializer (a forged event or Redis write), or
    the graph stores a type of its own: allow that type with
    ``saver.with_allowlist([("module", "Name")])``.
    """


class CheckpointDecodeError(ChatLogError, ValueError):
    """Raised when a stored checkpoint value's bytes are not a well-formed value."""


class ImportFormatError(ChatLogError, ValueError):
    """Raised when import input is not a chatlog export or LangChain message JSON.

    Also raised for input nested deeper than
    :data:`chatlog.histories.import_bounds.MAX_IMPORT_NESTING` levels (no chat
    message needs that; such a file is refused before it is parsed).
    """


class ImportOwnerError(ChatLogError, ValueError):
    """Raised when an import would take a session's owner from the imported data itself.

    A file (or a LangChain store) can claim any user: trusting it lets whoever
    wrote the file append to that user's sessions. Pass the owner
    (``import_sessions(..., user_id=...)``, ``chatlog import --user``), or
    accept the owners the source names with ``trust_file_owners=True``
    (``--trust-file-owners``). Nothing of the session was published.
    """


class InvalidCursorError(ChatLogError, ValueError):
    """Raised when a paging cursor is not one chatlog handed out.

    Pass back the ``next_cursor`` (``next_before``) of the previous page
    unchanged, or ``None`` for the first page.
    """


class TargetError(ReadModelError):
    """Raised when a read-model target (SQL, DynamoDB, ...) cannot be opened, read or written.

    The message names the target URL's store and what failed; check the URL
    (``--target``, ``CHATLOG_READ_MODEL``), that the store answers, and that the
    target's extra is installed (``pip install 'chatlog[postgres]'`` or
    ``'chatlog[dynamodb]'``). Applying is idempotent: run the same command again.
    """


class ItemTooLargeError(TargetError):
    """Raised when a session would pass a store's item size limit (DynamoDB's 400 KB).

    The projector does not fail: the append that would pass the limit is
    dead-lettered with this error's text and the session keeps what it had.
    Clear or delete the session, or move to a target without the limit.
    """


class EncryptionError(ChatLogError):
    """Raised when encryption is misconfigured or a data key cannot be created, read or destroyed.

    The message names the setting (``CHATLOG_ENCRYPTION_KEY``,
    ``CHATLOG_ENCRYPTION_OLD_KEYS``) or the key store topic to fix.
    """


class EncryptionKeyRequiredError(EncryptionError, ConfigurationError):
    """Raised when the log holds encrypted events and no key-encryption key is configured."""


class UnknownKeyEncryptionKeyError(EncryptionError):
    """Raised when a data key is wrapped by a key-encryption key chatlog was not given.

    Add that key to ``CHATLOG_ENCRYPTION_OLD_KEYS`` (during a rotation), or run
    ``chatlog keys rotate`` with it before it is retired.
    """


class DecryptionError(EncryptionError, ValueError):
    """Raised when a ciphertext does not open under its data key and associated data.

    The ciphertext was altered, or moved to another event or session; the
    projector dead-letters such a record.
    """


class UnsealableEventError(EncryptionError, ValueError):
    """Raised when encryption is on and an event's personal content cannot be sealed.

    Every chatlog event has a sealed form (conditional appends too, as
    ``MessagesSealed`` since ``chatlog.ChatEvent`` v4), so chatlog raises it
    only for a payload that is not a chatlog event record; it is kept for
    callers that catch it. Nothing is published when it is raised.
    """
