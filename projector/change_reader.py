"""The change reader: Kafka records of the event topic into :class:`Change` objects.

The projector decodes every record of the log, so :class:`ChangeReader`
reads the plain messages and lifecycle events that make up nearly all of a
log straight from their bytes (:func:`read_change`), without building any
event, in about a quarter of the time of
:func:`~chatlog.schemas.event_reader.read_event` and ``stored_message``
(``tests/unit/test_change_reader.py`` checks it against them); everything
else goes through the full decoder. A record it cannot project comes back
as a :class:`Refusal` (the worker dead-letters it).

A sealed event (``CHATLOG_ENCRYPTION_KEY``: a ``MessageSealed``, or a
``MessagesSealed`` conditional append) is opened with its subject's data key;
one whose key was destroyed (the subject was erased) becomes a
:func:`~chatlog.projector.changes.shredded_change` (op ``N``), which holds
nothing of it and only moves its session's position (never dead-lettered),
counted in :attr:`ChangeReader.shredded`.
"""

from __future__ import annotations

from typing import Any

from chatlog.errors import (
    ChatLogError,
    DecryptionError,
    EncryptionError,
    EncryptionKeyRequiredError,
    EventDecodeError,
    UnknownKeyEncryptionKeyError,
)
from chatlog.producers.key_store import DataKeyStore
from chatlog.projector.changes import (
    Change,
    Refusal,
    RefusalReason,
    change_of,
    shredded_change,
    ttl_arg,
)
from chatlog.projector.protocol import (
    OP_APPEND,
    OP_CLEAR,
    OP_DELETE_SESSION,
    OP_DELETE_USER,
    OP_SET_TTL,
)
from chatlog.schemas.codec import HEADER_SIZE, EventCodec
from chatlog.schemas.event_reader import (
    CANONICAL_UUID_SHAPE,
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    PLAIN_TAIL,
    UUID_SHAPE,
    BodyReader,
)
from chatlog.schemas.events import ChatEvent, MessageSealed, MessagesSealed
from chatlog.schemas.stored import (
    MARK_JSON_ESCAPES,
    PLAIN_ID_TEMPLATES_UTF8,
    PLAIN_TEMPLATES_UTF8,
    plain_message_utf8,
)

#: What follows the id of a plain message with an id: the plain tail without
#: its first two fields (name and id).
PLAIN_ID_TAIL = PLAIN_TAIL[2:]

#: What one event does to the read model: ``(session_id, user_id or "", event
#: time in epoch milliseconds, op, arg, key)``. See :func:`read_change` for the ops.
ChangeFields = tuple[str, str, int, str, bytes, str]


class ChangeReader:
    """Reads Kafka records of the event topic into :class:`Change` objects.

    Args:
        codec: The event codec (its registry resolves older schema versions).
        max_event_bytes: Records larger than this are refused (``CHATLOG_MAX_EVENT_BYTES``).
        key_store: The data keys that open sealed messages (``None``: encryption is
            off, and a sealed message raises :class:`EncryptionKeyRequiredError`).
    """

    def __init__(
        self, codec: EventCodec, max_event_bytes: int, *, key_store: DataKeyStore | None = None
    ) -> None:
        self.codec = codec
        self.max_event_bytes = max_event_bytes
        self.key_store = key_store
        #: Sealed messages read whose data key was destroyed (``chatlog_events_shredded_total``).
        self.shredded = 0
        self._fast_headers = codec.fast_headers

    def read(self, raw: Any) -> Change | Refusal:
        """The change of Kafka record ``raw``, or the :class:`Refusal` saying why there is none.

        ``raw`` has the attributes of a kafka-python ``ConsumerRecord``
        (``key``, ``value``, ``partition``, ``offset``).
        """
        value = raw.value
        if value is not None and len(value) > self.max_event_bytes:
            # No chatlog producer writes these; one that slipped in (another
            # client, a raised broker limit) must not bloat the read model.
            return Refusal(
                RefusalReason.OVERSIZE,
                f"over-size: {len(value)} bytes, over the limit of {self.max_event_bytes} "
                "(CHATLOG_MAX_EVENT_BYTES); raise the limit and re-publish it from the "
                "dead-letter topic if it is wanted",
            )
        if value is not None and value[:HEADER_SIZE] in self._fast_headers:
            try:
                fields = read_change(value, HEADER_SIZE)
            except ChatLogError as exc:
                return Refusal(RefusalReason.UNDECODABLE, f"undecodable: {exc}")
            if fields is not None:
                if raw.key != fields[0].encode():
                    return _wrong_key(raw.key, fields[0])
                if len(fields[4]) > self.max_event_bytes:
                    return self._stored_oversize(fields[0], len(fields[4]))
                return _new_change(Change, (raw.partition, raw.offset, *fields))
        try:
            event = self.codec.decode(value)
        except ChatLogError as exc:
            return Refusal(RefusalReason.UNDECODABLE, f"undecodable: {exc}")
        if raw.key != event.session_id.encode():
            return _wrong_key(raw.key, event.session_id)
        if type(event.payload) in _SEALED:
            opened = self._open(event)
            if opened is None:
                return shredded_change(raw.partition, raw.offset, event)
            if type(opened) is Refusal:
                return opened
            event = opened  # type: ignore[assignment]
        try:
            change = change_of(raw.partition, raw.offset, event)
        except ChatLogError as exc:
            return Refusal(RefusalReason.UNPROJECTABLE, str(exc))
        if len(change.arg) > self.max_event_bytes:
            return self._stored_oversize(change.session_id, len(change.arg))
        return change

    def _open(self, event: ChatEvent) -> ChatEvent | Refusal | None:
        """The sealed event opened, ``None`` if shredded, or the refusal saying why not.

        Raises:
            EncryptionKeyRequiredError: encryption is off in this process.
            UnknownKeyEncryptionKeyError: its data key is wrapped by a KEK not configured.
        """
        if self.key_store is None:
            raise EncryptionKeyRequiredError(
                f"session {event.session_id!r} holds encrypted messages: set "
                "CHATLOG_ENCRYPTION_KEY (and CHATLOG_ENCRYPTION_OLD_KEYS during a rotation) "
                "to the deployment's key-encryption key"
            )
        try:
            opened = self.key_store.open_event(event)
        except DecryptionError as exc:
            return Refusal(RefusalReason.UNDECRYPTABLE, f"undecryptable: {exc}")
        except UnknownKeyEncryptionKeyError:
            raise
        except EncryptionError as exc:
            return Refusal(RefusalReason.KEY_MISSING, f"key missing: {exc}")
        if opened is None:
            self.shredded += 1
        return opened

    def _stored_oversize(self, session_id: str, size: int) -> Refusal:
        # The producer refuses these (producers/size_limit.py); one that
        # slipped in must not cost the read model more than the limit allows.
        return Refusal(
            RefusalReason.STORED_OVERSIZE,
            f"stored over-size: the message for session {session_id!r} would be stored as "
            f"{size} bytes of JSON, over the limit of {self.max_event_bytes} "
            "(CHATLOG_MAX_EVENT_BYTES); split it, or raise the limit and re-publish it "
            "from the dead-letter topic",
        )


#: The payloads that are opened with their subject's data key.
_SEALED = (MessageSealed, MessagesSealed)

# NamedTuple's generated __new__ is Python code; this is the C constructor it calls.
_new_change = tuple.__new__


def _wrong_key(key: bytes | None, session_id: str) -> Refusal:
    text = key.decode("utf-8", "replace") if key is not None else None
    return Refusal(RefusalReason.WRONG_KEY, f"key {text!r} is not the session id {session_id!r}")


def read_change(data: bytes, start: int) -> ChangeFields | None:
    """What the v4 ``ChatEvent`` body at ``data[start]`` does to the read model.

    The projector's shortcut past :func:`~chatlog.schemas.event_reader.read_event` and
    :func:`~chatlog.schemas.stored.stored_message`: it takes the few fields the
    read model needs straight from the bytes and builds no event. The op and
    its ``arg``:

    - ``"A"``: a plain message (text content, every other field at its
      default, a type with a plain template) was appended; ``arg`` is
      ``stored_message(payload).encode()``, byte for byte.
    - ``"C"``, ``"D"``, ``"U"``: :class:`SessionCleared`,
      :class:`SessionDeleted`, :class:`UserDeleted`; ``arg`` is ``b""``.
    - ``"T"``: :class:`SessionTtlSet`; ``arg`` is ``ttl_arg(ttl_ms)`` (clamped) as
      ASCII, or ``b""`` for ``ttl_ms=None``.

    Returns:
        The fields, equal to what :func:`read_event` and ``stored_message``
        give for the same bytes; or ``None`` where the shortcut does not
        apply: any other message, an event id not in canonical form, an event
        time outside ``datetime``'s range, a valid but unusual encoding (such
        as a varint longer than it needs to be). The caller then decodes with
        :func:`read_event`, which also raises the error of an invalid body.
        It never returns fields for a body :func:`read_event` refuses.

    Raises:
        EventDecodeError: the bytes are not a valid v4 body. Only bodies
            :func:`read_event` refuses too; it may also return ``None`` for one.
    """
    # One function with the reads written out: on a plain message a BodyReader and
    # its method calls would cost as much as all the rest. The inlined reads
    # take the forms the producer writes (one-byte union branches, lengths of
    # one byte, or two for the content); anything else goes to BodyReader, so it
    # means what it means in read_event and fails with the same error. A
    # one-byte string length is an even byte below 0x80 (zig-zag 0..63), hence
    # the tests of ``size & 0x81``. A length running past the end of the data
    # needs no test where another read follows: that read raises IndexError.
    try:
        # The producer writes str(uuid4()): the one-byte length 0x48 (36), then
        # the canonical spelling, the only one kept as it is (else read_event
        # normalizes it through UUID(), which this shortcut leaves to it).
        if (
            data[start] != 0x48
            or data[start + 1 : start + 37].translate(UUID_SHAPE) != CANONICAL_UUID_SHAPE
        ):
            return None
        pos = start + 37

        size = data[pos]
        if size & 0x81:
            reader = BodyReader(data, pos)
            session_id = reader.string()
            pos = reader.pos
        else:
            end = pos + 1 + (size >> 1)
            session_id = data[pos + 1 : end].decode()
            pos = end

        size = data[pos]
        if size == 2 and not data[pos + 1] & 0x81:  # union branch 1, a short string
            end = pos + 2 + (data[pos + 1] >> 1)
            user_id = data[pos + 2 : end].decode()
            pos = end
        elif size == 0:  # union branch 0: null
            user_id = ""
            pos += 1
        else:
            reader = BodyReader(data, pos)
            user_id = reader.optional_string() or ""
            pos = reader.pos

        # The event time always takes several varint bytes (six from 1970 to
        # 2039); this is BodyReader.long, with its 10-byte limit.
        byte = data[pos]
        pos += 1
        value = byte & 0x7F
        shift = 7
        while byte >= 0x80:
            if shift > 63:
                raise EventDecodeError("corrupt event body: a varint longer than 10 bytes")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
        ms = (value >> 1) ^ -(value & 1)
        if not MIN_EVENT_MS <= ms <= MAX_EVENT_MS:
            return None

        # The source is not needed, but read_event refuses it when it is not UTF-8.
        size = data[pos]
        if size == 2 and not data[pos + 1] & 0x81:
            end = pos + 2 + (data[pos + 1] >> 1)
            data[pos + 2 : end].decode()
            pos = end
        elif size == 0:
            pos += 1
        else:
            reader = BodyReader(data, pos)
            reader.optional_string()
            pos = reader.pos

        branch = data[pos]
        if branch == 0:  # MessageAppended
            size = data[pos + 1]
            if size & 0x81:
                return None
            end = pos + 2 + (size >> 1)
            kind = data[pos + 2 : end]
            # Content union branch 0 (a string), then its length: one or two
            # varint bytes for up to 8191 bytes of text.
            if data[end] != 0:
                return None
            size = data[end + 1]
            if size < 0x80:
                pos = end + 2
            elif data[end + 2] < 0x80:
                size = (size & 0x7F) | data[end + 2] << 7
                pos = end + 3
            else:  # 8 KiB of text or more
                reader = BodyReader(data, end + 1)
                length = reader.long()
                size = length << 1 if length >= 0 else 1  # its zig-zag form, for the test below
                pos = reader.pos
            if size & 1:
                return None  # a negative length, which read_event refuses
            end = pos + (size >> 1)
            # The plain message's tail also ends the data, so there can be no
            # trailing bytes, and the content is all there.
            if data[end:] != PLAIN_TAIL:
                # A plain message with an id, as chatlog writes them: name null,
                # then the id as a one-byte-length string, then the plain tail.
                if data[end : end + 2] != b"\x00\x02" or data[end + 2] & 0x81:
                    return None
                cut = end + 3 + (data[end + 2] >> 1)
                if data[cut:] != PLAIN_ID_TAIL:
                    return None
                key = data[end + 3 : cut]
                template_id = PLAIN_ID_TEMPLATES_UTF8.get(kind)
                content = data[pos:end]
                if (
                    template_id is None
                    or not (content + key).isascii()
                    or (content + key).translate(MARK_JSON_ESCAPES) != content + key
                ):
                    return None
                prefix, middle, suffix = template_id
                rendered = prefix + content + middle + key + suffix
                return (session_id, user_id, ms, OP_APPEND, rendered, key.decode())
            template = PLAIN_TEMPLATES_UTF8.get(kind)
            if template is None:
                return None
            content = data[pos:end]
            # The usual message, ASCII text that needs no JSON escape, is
            # rendered here; plain_message_utf8 does all others.
            if content.isascii() and content.translate(MARK_JSON_ESCAPES) == content:
                return (
                    session_id, user_id, ms, OP_APPEND, template[0] + content + template[1], ""
                )
            stored = plain_message_utf8(kind, content)
            return None if stored is None else (session_id, user_id, ms, OP_APPEND, stored, "")
        pos += 1
        if branch == 2:
            op, arg = OP_CLEAR, b""
        elif branch == 4:
            op, arg = OP_DELETE_SESSION, b""
        elif branch == 6:
            op, arg = OP_DELETE_USER, b""
        elif branch == 8:
            reader = BodyReader(data, pos)
            ttl_ms = reader.optional_long()
            pos = reader.pos
            op, arg = OP_SET_TTL, b"" if ttl_ms is None else ttl_arg(ttl_ms)
        else:
            return None
    except EventDecodeError:
        raise
    except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventDecodeError(f"corrupt event body: {type(exc).__name__}: {exc}") from exc
    if pos != len(data):
        raise EventDecodeError(
            f"corrupt event body: {len(data) - pos} trailing bytes after the record"
        )
    return (session_id, user_id, ms, op, arg, "")


