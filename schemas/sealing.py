"""Per-subject encryption of message content: AES-256-GCM envelopes and wrapped data keys.

Crypto-shredding: every message's personal content is encrypted under a data
key (DEK) of its *subject* (the user id, else the session id), and the data
keys are kept, wrapped by the deployment's key-encryption key (KEK,
``CHATLOG_ENCRYPTION_KEY``), in a key store outside the log
(:mod:`chatlog.producers.key_store`). Destroying a subject's data keys makes
every copy of its events unreadable, in the log and in its backups.

A :class:`~chatlog.schemas.events.MessageSealed` keeps in clear what the
projector routes by (the envelope's ids, user, time; the message's type and
id) and encrypts every other field of the message. The associated data binds
the ciphertext to its session, event id, subject, data key, type and id: a
ciphertext moved to another event or session does not open
(:class:`~chatlog.errors.DecryptionError`). A conditional append
(:class:`~chatlog.schemas.events.MessagesAppended`) is sealed as a
:class:`~chatlog.schemas.events.MessagesSealed`: its expected version in
clear, each message a ``MessageSealed`` whose associated data also binds the
expected version and the message's place in the event (another format name,
so a single message's ciphertext never opens there, nor the reverse).

Needs the ``cryptography`` package (``pip install 'chatlog[encryption]'``);
imported only when encryption is configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args
from uuid import uuid4

from chatlog.errors import (
    ConfigurationError,
    DecryptionError,
    EncryptionError,
    UnsealableEventError,
)
from chatlog.schemas.codec import message_from_record, message_record
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
    Payload,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: Bytes of an AES-256 key (KEK and DEK alike).
KEY_SIZE = 32
#: Bytes of an AES-GCM nonce; random per encryption (2^32 messages per key
#: keep the collision probability below NIST's 2^-32 bound).
NONCE_SIZE = 12
#: Names the plaintext layout and the associated data of a sealed message;
#: bound into every ciphertext, so a future layout can never be confused with it.
SEALED_FORMAT = "chatlog.MessageSealed.v1"
#: The same for a message of a sealed conditional append (:class:`MessagesSealed`).
SEALED_GROUP_FORMAT = "chatlog.MessagesSealed.v1"
#: The same for a data key wrapped by a key-encryption key.
WRAPPED_FORMAT = "chatlog.DataKey.v1"

_SEPARATOR = "\x00"


def _aesgcm(secret: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise EncryptionError(
            "CHATLOG_ENCRYPTION_KEY is set but the cryptography package is missing: "
            "pip install 'chatlog[encryption]'"
        ) from exc
    return AESGCM(secret)


def _associated(*parts: str) -> bytes:
    # No chatlog id holds a NUL (identifiers refuse control characters), so the
    # joined parts cannot be re-split another way.
    return _SEPARATOR.join(parts).encode("utf-8")


@dataclass(frozen=True)
class DataKey:
    """One data key of one subject: AES-256-GCM over that subject's messages.

    ``key_id`` tells a subject's keys apart: a subject whose keys were
    destroyed (erased) and who writes again gets a new one.
    """

    subject: str
    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls, subject: str) -> DataKey:
        """A new random data key for ``subject``."""
        return cls(subject, uuid4().hex, os.urandom(KEY_SIZE))

    @cached_property
    def _cipher(self) -> AESGCM:
        # Built once per key (it costs as much as sealing a message), and gone
        # with the key: no cache outlives a destroyed key.
        return _aesgcm(self.secret)

    def seal(self, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)`` of ``plaintext``, the GCM tag appended to the ciphertext."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce, self._cipher.encrypt(nonce, plaintext, associated)

    def open(self, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
        """The plaintext of :meth:`seal`'s output.

        Raises:
            DecryptionError: the ciphertext, its nonce or the associated data
                is not what this key sealed.
        """
        cipher = self._cipher  # first: says how to install cryptography when it is missing
        from cryptography.exceptions import InvalidTag

        try:
            return cipher.decrypt(nonce, ciphertext, associated)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError(
                f"a ciphertext of subject {self.subject!r} does not open under its data key "
                f"{self.key_id}: it was altered or moved from another event or session"
            ) from exc


@dataclass(frozen=True, slots=True)
class KeyEncryptionKey:
    """The deployment's key-encryption key: wraps every data key in the key store.

    ``key_id`` names it without revealing it (an HMAC of a fixed label), so a
    wrapped data key says which KEK opens it.
    """

    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """A short, stable, non-secret name of this key."""
        return hmac.new(self.secret, b"chatlog key-encryption key id", hashlib.sha256).hexdigest()[
            :16
        ]

    @classmethod
    def parse(cls, text: str, *, variable: str = "CHATLOG_ENCRYPTION_KEY") -> KeyEncryptionKey:
        """The key in ``text``: base64 of 32 bytes, or ``file:PATH`` of a file holding that.

        Raises:
            ConfigurationError: not 32 bytes of base64, or the file is unreadable.
        """
        text = text.strip()
        if text.startswith("file:"):
            path = Path(text[len("file:") :])
            try:
                text = path.read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"{variable}: cannot read the key file {str(path)!r}: {exc}"
                ) from exc
        try:
            secret = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigurationError(
                f"{variable} is not base64; generate one with `chatlog keys generate`"
            ) from exc
        if len(secret) != KEY_SIZE:
            raise ConfigurationError(
                f"{variable} holds {len(secret)} bytes, not {KEY_SIZE}; generate one with "
                "`chatlog keys generate`"
            )
        return cls(secret)

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        """A new random key-encryption key."""
        return cls(os.urandom(KEY_SIZE))

    def encoded(self) -> str:
        """The key as ``CHATLOG_ENCRYPTION_KEY`` takes it (base64)."""
        return base64.b64encode(self.secret).decode("ascii")

    def wrap(self, key: DataKey) -> bytes:
        """``key``'s secret encrypted under this key, bound to its subject and id."""
        nonce, sealed = DataKey(key.subject, self.key_id, self.secret).seal(
            key.secret, _associated(WRAPPED_FORMAT, key.subject, key.key_id)
        )
        return nonce + sealed

    def unwrap(self, subject: str, key_id: str, wrapped: bytes) -> DataKey:
        """The data key :meth:`wrap` wrapped.

        Raises:
            DecryptionError: ``wrapped`` is not a key this KEK wrapped for that subject and id.
        """
        opener = DataKey(subject, self.key_id, self.secret)
        secret = opener.open(
            wrapped[:NONCE_SIZE],
            wrapped[NONCE_SIZE:],
            _associated(WRAPPED_FORMAT, subject, key_id),
        )
        return DataKey(subject, key_id, secret)


def key_encryption_keys(current: str | None, old: str | None) -> list[KeyEncryptionKey]:
    """The configured KEKs, the current one first (``CHATLOG_ENCRYPTION_KEY``, ``..._OLD_KEYS``).

    Empty when encryption is off.

    Raises:
        ConfigurationError: a key is malformed, or old keys are given without a current one.
    """
    if not current:
        if old:
            raise ConfigurationError(
                "CHATLOG_ENCRYPTION_OLD_KEYS is set without CHATLOG_ENCRYPTION_KEY: set the "
                "current key too"
            )
        return []
    keys = [KeyEncryptionKey.parse(current)]
    for part in (old or "").split(","):
        if part.strip():
            keys.append(KeyEncryptionKey.parse(part, variable="CHATLOG_ENCRYPTION_OLD_KEYS"))
    return keys


def subject_of(event: ChatEvent) -> str:
    """Whose data key encrypts ``event``: its user, else its session."""
    return event.user_id or event.session_id


def _message_aad(
    event: ChatEvent, subject: str, key_id: str, kind: str, msg_id: str | None
) -> bytes:
    return _associated(
        SEALED_FORMAT, event.session_id, event.event_id, subject, key_id, kind, msg_id or ""
    )


def _group_aad(
    event: ChatEvent,
    subject: str,
    key_id: str,
    kind: str,
    msg_id: str | None,
    expected_version: int,
    place: int,
) -> bytes:
    # The expected version and the message's place in the event are bound too:
    # a conditional append's messages cannot be reordered, dropped into another
    # append or given another version without failing to open.
    return _associated(
        SEALED_GROUP_FORMAT,
        event.session_id,
        event.event_id,
        subject,
        key_id,
        kind,
        msg_id or "",
        str(expected_version),
        str(place),
    )


#: Every payload record of a chat event.
_PAYLOADS = get_args(Payload)


def check_sealable(event: ChatEvent) -> None:
    """Refuse an event whose personal content has no sealed form.

    Every chatlog payload has one today (messages, conditional appends) or
    carries nothing personal (lifecycle events); kept for callers that
    checked before sealing.

    Raises:
        UnsealableEventError: never for a chatlog payload.
    """
    if not isinstance(event.payload, _PAYLOADS):
        raise UnsealableEventError(
            f"an event of type {type(event.payload).__name__} for session "
            f"{event.session_id!r} has no sealed form, and CHATLOG_ENCRYPTION_KEY is set: "
            "nothing was published"
        )


def _seal_fields(message: MessageAppended, key: DataKey, associated: bytes) -> MessageSealed:
    fields = message_record(message)
    del fields["type"], fields["id"]
    plaintext = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    nonce, ciphertext = key.seal(plaintext, associated)
    return MessageSealed(key.subject, key.key_id, message.type, message.id, nonce, ciphertext)


def seal_message(event: ChatEvent, key: DataKey) -> ChatEvent:
    """``event`` with its messages encrypted under ``key`` (other events unchanged).

    A :class:`MessageAppended` becomes a :class:`MessageSealed`, a conditional
    append (:class:`MessagesAppended`) a :class:`MessagesSealed`.
    """
    payload = event.payload
    if isinstance(payload, MessageAppended):
        aad = _message_aad(event, key.subject, key.key_id, payload.type, payload.id)
        return _with_payload(event, _seal_fields(payload, key, aad))
    if isinstance(payload, MessagesAppended):
        version = payload.expected_version
        sealed = tuple(
            _seal_fields(
                message,
                key,
                _group_aad(event, key.subject, key.key_id, message.type, message.id, version, n),
            )
            for n, message in enumerate(payload.messages)
        )
        return _with_payload(event, MessagesSealed(version, sealed))
    return event


def _open_fields(
    event: ChatEvent, key: DataKey, sealed: MessageSealed, associated: bytes
) -> MessageAppended:
    plaintext = key.open(sealed.nonce, sealed.ciphertext, associated)
    try:
        fields: dict[str, Any] = json.loads(plaintext)
        return message_from_record({**fields, "type": sealed.type, "id": sealed.id})
    except (ValueError, KeyError, TypeError) as exc:
        # Authentic ciphertext from a writer with another layout: a bug, not tampering.
        raise DecryptionError(
            f"a sealed message of session {event.session_id!r} opened but its fields are not "
            f"{SEALED_FORMAT}: {exc}"
        ) from exc


def sealed_subjects(event: ChatEvent) -> list[tuple[str, str]]:
    """The ``(subject, key id)`` of every data key ``event``'s sealed messages need, in order.

    Empty for an event with nothing sealed.
    """
    payload = event.payload
    if isinstance(payload, MessageSealed):
        return [(payload.subject, payload.key_id)]
    if isinstance(payload, MessagesSealed):
        return list(dict.fromkeys((m.subject, m.key_id) for m in payload.messages))
    return []


def open_message(event: ChatEvent, key: DataKey) -> ChatEvent:
    """The event that :func:`seal_message` sealed into ``event``, opened with ``key``.

    A :class:`MessageSealed` gives its :class:`MessageAppended`, a
    :class:`MessagesSealed` its :class:`MessagesAppended`; other events are
    returned as they are.

    Raises:
        DecryptionError: a ciphertext does not open under ``key`` with this
            event's associated data (altered, or spliced from another event),
            or a message of it was sealed under another key.
    """
    sealed = event.payload
    if isinstance(sealed, MessageSealed):
        aad = _message_aad(event, sealed.subject, sealed.key_id, sealed.type, sealed.id)
        return _with_payload(event, _open_fields(event, key, sealed, aad))
    if isinstance(sealed, MessagesSealed):
        version = sealed.expected_version
        messages = []
        for n, message in enumerate(sealed.messages):
            if (message.subject, message.key_id) != (key.subject, key.key_id):
                raise DecryptionError(
                    f"a sealed conditional append of session {event.session_id!r} holds "
                    f"messages under several data keys: it was altered"
                )
            aad = _group_aad(
                event, message.subject, message.key_id, message.type, message.id, version, n
            )
            messages.append(_open_fields(event, key, message, aad))
        return _with_payload(event, MessagesAppended(version, tuple(messages)))
    return event


def _with_payload(event: ChatEvent, payload: Payload) -> ChatEvent:
    # dataclasses.replace re-inspects the fields on every call: half the cost of opening.
    return ChatEvent(
        event.session_id, payload, event.user_id, event.source, event.event_id, event.occurred_at
    )
