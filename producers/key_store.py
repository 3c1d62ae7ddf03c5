"""The data-key store of encryption: a compacted Kafka topic, ``<topic>.keys``, read into memory.

With ``CHATLOG_ENCRYPTION_KEY`` set, each subject (a user, else a session)
has data keys (:class:`~chatlog.schemas.sealing.DataKey`) that encrypt its
messages. They are kept here, never in Redis (a read model is disposable;
losing a key would lose the subject's history):

- one partition, ``cleanup.policy=compact``, unlimited retention, and
  tombstones kept forever (``delete.retention.ms`` at its maximum) so a
  reader can tell a destroyed key from one it was never given;
- record key ``<subject>/<key id>``; value the data key wrapped by a
  key-encryption key (KEK), as JSON naming that KEK's id; a tombstone (null
  value) destroys the key.

Writers, the projector and replays read the topic to its end when they start
and again whenever they meet a key they do not hold (a writer publishes a
key, acknowledged, before any event sealed under it, so reading to the end
then always finds it); on the write path they also load what their consumer
has fetched meanwhile, at most every :data:`REFRESH_S`.

When is a destroyed key unrecoverable? The tombstone removes it from every
reader at once, but the record that held it (wrapped) stays in the topic
until the broker compacts that segment: on Apache Kafka, once the segment is
closed (``segment.ms``, 1 hour here) and the cleaner runs
(``min.cleanable.dirty.ratio`` 0.01 here, ``max.compaction.lag.ms`` 1 day
here). The embedded broker (Tansu) never compacts. Either way
:meth:`DataKeyStore.rotate` re-wraps only live keys under the current KEK;
once the old KEK is retired, every copy of a destroyed key, in the topic and
in its backups, is wrapped by a key nobody has.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from chatlog.errors import (
    BrokerUnavailableError,
    DecryptionError,
    EncryptionError,
    EncryptionKeyRequiredError,
    UnknownKeyEncryptionKeyError,
)
from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.schemas.events import ChatEvent, MessageAppended, MessagesAppended, MessagesSealed
from chatlog.schemas.sealing import (
    WRAPPED_FORMAT,
    DataKey,
    KeyEncryptionKey,
    check_sealable,
    key_encryption_keys,
    open_message,
    seal_message,
    sealed_subjects,
    subject_of,
)
from chatlog.settings import Settings

#: The key store's topic settings: compacted, never deleted by time or size,
#: tombstones kept (they say "destroyed"), segments rolled hourly and cleaned
#: eagerly so a destroyed key's record is compacted away soon.
KEYS_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "delete.retention.ms": str(2**63 - 1),
    "segment.ms": str(60 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.01",
    "max.compaction.lag.ms": str(24 * 60 * 60 * 1000),
}
#: How often a writer loads what the store's consumer fetched meanwhile
#: (another process may have destroyed a key it is about to write under).
REFRESH_S = 1.0
_PARTITION = 0


@dataclass(slots=True)
class _Entry:
    """One live data key as the topic holds it: wrapped, and opened on first use."""

    kek_id: str
    wrapped: bytes
    offset: int
    key: DataKey | None = None


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What :meth:`DataKeyStore.rotate` did."""

    kek_id: str
    rewrapped: int
    live_keys: int
    retired_kek_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``chatlog keys rotate --json``)."""
        return {
            "kek_id": self.kek_id,
            "rewrapped": self.rewrapped,
            "live_keys": self.live_keys,
            "retired_kek_ids": self.retired_kek_ids,
        }


class DataKeyStore:
    """Every subject's data keys, wrapped by the KEK, in the compacted topic ``<topic>.keys``.

    Seals events for the producer (:meth:`seal_event`) and opens them for the
    projector and replays (:meth:`open_event`). Thread-safe; one per process
    is enough (:class:`~chatlog.producers.producer.EventProducer` owns one).

    Args:
        settings: The deployment; ``settings.encryption_key`` (and
            ``encryption_old_keys`` during a rotation) are the KEKs.

    Raises:
        EncryptionKeyRequiredError: no ``CHATLOG_ENCRYPTION_KEY``.
        BrokerUnavailableError: the key store cannot be read.
    """

    def __init__(self, settings: Settings) -> None:
        keks = key_encryption_keys(settings.encryption_key, settings.encryption_old_keys)
        if not keks:
            raise EncryptionKeyRequiredError(
                "encryption needs CHATLOG_ENCRYPTION_KEY (base64 of 32 bytes, or file:PATH)"
            )
        self.settings = settings
        self.topic = settings.keys_topic
        self.kek = keks[0]
        self._keks = {k.key_id: k for k in keks}
        self._live: dict[str, dict[str, _Entry]] = {}
        self._destroyed: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        self._refreshed_at = 0.0
        self._producer: KafkaProducer | None = None
        ensure_keys_topic(settings)
        timeout_ms = int(settings.publish_timeout_s * 1000)
        try:
            self._consumer = KafkaConsumer(
                **settings.kafka_client_options(),
                enable_auto_commit=False,
                request_timeout_ms=max(timeout_ms, 1000),
                bootstrap_timeout_ms=timeout_ms,
            )
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"cannot read the key store {self.topic!r}: {exc}; check KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        self._tp = TopicPartition(self.topic, _PARTITION)
        self._consumer.assign([self._tp])
        self._consumer.seek_to_beginning(self._tp)
        self.catch_up()

    # -- reading -------------------------------------------------------------

    def catch_up(self) -> None:
        """Read the key store up to its end now (keys created and destroyed elsewhere)."""
        with self._lock:
            end = end_offsets(self.settings, self.topic, [_PARTITION]).get(_PARTITION, 0)
            deadline = time.monotonic() + self.settings.publish_timeout_s
            while self._position() < end:
                if time.monotonic() > deadline:
                    raise BrokerUnavailableError(
                        f"the key store {self.topic!r} did not reach offset {end} within "
                        f"{self.settings.publish_timeout_s:g}s; check the broker"
                    )
                self._poll(50)

    def _position(self) -> int:
        try:
            position: int = self._consumer.position(self._tp)
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"reading the key store {self.topic!r} failed: {exc}"
            ) from exc
        return position

    def _poll(self, timeout_ms: int) -> None:
        """Load what the store's consumer fetches within ``timeout_ms`` (0: what it has)."""
        try:
            for raws in self._consumer.poll(timeout_ms=timeout_ms).values():
                for raw in raws:
                    self._load(raw)
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"reading the key store {self.topic!r} failed: {exc}"
            ) from exc
        self._refreshed_at = time.monotonic()

    def _load(self, raw: Any) -> None:
        subject, _, key_id = raw.key.decode("utf-8").rpartition("/")
        if raw.value is None:
            self._live.get(subject, {}).pop(key_id, None)
            self._destroyed.add((subject, key_id))
            return
        record = json.loads(raw.value)
        if record.get("format") != WRAPPED_FORMAT:
            raise EncryptionError(
                f"record {raw.offset} of the key store {self.topic!r} is not a "
                f"{WRAPPED_FORMAT}: only chatlog may write to that topic"
            )
        keys = self._live.setdefault(subject, {})
        previous = keys.get(key_id)
        # A re-wrap (rotation) keeps the key's place (the first key of a subject
        # stays the one its writers use) and, once opened, the key itself: a
        # process not yet given the new KEK keeps using the keys it holds.
        offset = previous.offset if previous is not None else raw.offset
        opened = previous.key if previous is not None else None
        keys[key_id] = _Entry(
            record["kek_id"], base64.b64decode(record["wrapped"]), offset, opened
        )
        self._destroyed.discard((subject, key_id))

    def _opened(self, entry: _Entry, subject: str, key_id: str) -> DataKey:
        if entry.key is None:
            kek = self._keks.get(entry.kek_id)
            if kek is None:
                raise UnknownKeyEncryptionKeyError(
                    f"data key {key_id} of subject {subject!r} is wrapped by key-encryption key "
                    f"{entry.kek_id}, which is neither CHATLOG_ENCRYPTION_KEY nor in "
                    "CHATLOG_ENCRYPTION_OLD_KEYS: add it there, then run `chatlog keys rotate`"
                )
            entry.key = kek.unwrap(subject, key_id, entry.wrapped)
        return entry.key

    def find(self, subject: str, key_id: str) -> DataKey | None:
        """The data key ``key_id`` of ``subject``, or ``None`` when it was destroyed.

        Raises:
            EncryptionError: the store never held that key (a key store that is
                not this log's, or a lost topic).
            UnknownKeyEncryptionKeyError: it is wrapped by a KEK chatlog was not given.
        """
        with self._lock:
            entry = self._live.get(subject, {}).get(key_id)
            if entry is None and (subject, key_id) not in self._destroyed:
                self.catch_up()
                entry = self._live.get(subject, {}).get(key_id)
            if entry is not None:
                return self._opened(entry, subject, key_id)
            if (subject, key_id) in self._destroyed:
                return None
        raise EncryptionError(
            f"data key {key_id} of subject {subject!r} is not in the key store {self.topic!r}, "
            "not even destroyed: CHATLOG_TOPIC must name the log it was written with, and its "
            ".keys topic must be restored from backup"
        )

    def is_destroyed(self, subject: str, key_id: str) -> bool:
        """Whether the data key ``key_id`` of ``subject`` was destroyed (erased)."""
        with self._lock:
            return (subject, key_id) in self._destroyed

    def subjects(self) -> list[str]:
        """Every subject with a live data key."""
        with self._lock:
            return sorted(s for s, keys in self._live.items() if keys)

    # -- writing -------------------------------------------------------------

    def key_for(self, subject: str) -> DataKey:
        """The data key new events of ``subject`` are sealed under; created on first use."""
        with self._lock:
            if time.monotonic() - self._refreshed_at > REFRESH_S:
                # Cheap: keys destroyed elsewhere arrive within a fetch or two.
                self._poll(0)
            keys = self._live.get(subject)
            if not keys:
                self.catch_up()
                keys = self._live.get(subject)
            if keys:
                key_id, entry = min(keys.items(), key=lambda item: item[1].offset)
                return self._opened(entry, subject, key_id)
            key = DataKey.generate(subject)
            offset = self._send(subject, key.key_id, self._wrapped(key))
            self._live.setdefault(subject, {})[key.key_id] = _Entry(
                self.kek.key_id, b"", offset, key
            )
            return key

    def destroy(self, *subjects: str) -> list[str]:
        """Destroy every data key of ``subjects``: their events can never be read again.

        Publishes one tombstone per key (acknowledged before this returns).
        Returns the ids of the keys destroyed (empty when they had none).
        """
        destroyed: list[str] = []
        with self._lock:
            self.catch_up()
            for subject in subjects:
                key_ids = sorted(self._live.get(subject, {}))
                for key_id in key_ids:
                    self._send(subject, key_id, None)
                    self._live[subject].pop(key_id, None)
                    self._destroyed.add((subject, key_id))
                destroyed += key_ids
        return destroyed

    def rotate(self) -> RotationReport:
        """Re-wrap every live data key under the current KEK; the log is not rewritten.

        Reads the store to its end and re-wraps every key wrapped by another
        KEK, again until none is left (a writer still configured with the old
        KEK may add one meanwhile). Afterwards the old KEKs can be retired:
        remove them from ``CHATLOG_ENCRYPTION_OLD_KEYS``.

        Raises:
            UnknownKeyEncryptionKeyError: a key is wrapped by a KEK chatlog was not given.
        """
        rewrapped = 0
        retired: set[str] = set()
        with self._lock:
            while True:
                self.catch_up()
                stale = [
                    (subject, key_id, entry)
                    for subject, keys in self._live.items()
                    for key_id, entry in keys.items()
                    if entry.kek_id != self.kek.key_id
                ]
                if not stale:
                    break
                for subject, key_id, entry in stale:
                    key = self._opened(entry, subject, key_id)
                    retired.add(entry.kek_id)
                    self._send(subject, key_id, self._wrapped(key))
                    rewrapped += 1
            live = sum(len(keys) for keys in self._live.values())
        return RotationReport(self.kek.key_id, rewrapped, live, sorted(retired))

    def _wrapped(self, key: DataKey) -> bytes:
        return json.dumps(
            {
                "format": WRAPPED_FORMAT,
                "subject": key.subject,
                "key_id": key.key_id,
                "kek_id": self.kek.key_id,
                "wrapped": base64.b64encode(self.kek.wrap(key)).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode("utf-8")

    def _send(self, subject: str, key_id: str, value: bytes | None) -> int:
        timeout_s = self.settings.publish_timeout_s
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    **self.settings.kafka_client_options(),
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=0,
                    max_block_ms=int(timeout_s * 1000),
                )
            future = self._producer.send(
                self.topic, key=f"{subject}/{key_id}".encode(), value=value, partition=_PARTITION
            )
            offset: int = future.get(timeout=timeout_s).offset
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"the key store {self.topic!r} did not acknowledge a data key within "
                f"{timeout_s:g}s: {exc}; nothing sealed under it was published"
            ) from exc
        return offset

    # -- events ----------------------------------------------------------------

    def seal_event(self, event: ChatEvent) -> ChatEvent:
        """``event`` with its messages encrypted under its subject's data key.

        A message becomes a ``MessageSealed``, a conditional append a
        ``MessagesSealed``; events without personal content stay as they are.
        """
        check_sealable(event)
        if not isinstance(event.payload, (MessageAppended, MessagesAppended)):
            return event
        return seal_message(event, self.key_for(subject_of(event)))

    def open_event(self, event: ChatEvent) -> ChatEvent | None:
        """``event`` with its sealed messages opened; ``None`` when its data key was destroyed.

        Raises:
            DecryptionError: a ciphertext does not open (altered or spliced).
            EncryptionError: its data key is unknown to the store.
        """
        needed = sealed_subjects(event)
        if not needed:
            payload = event.payload
            if isinstance(payload, MessagesSealed):  # no message: nothing to open
                return replace(event, payload=MessagesAppended(payload.expected_version))
            return event
        if len(needed) > 1:
            raise DecryptionError(
                f"a sealed event of session {event.session_id!r} names several data keys "
                f"{needed}: chatlog seals each event under one key"
            )
        subject, key_id = needed[0]
        key = self.find(subject, key_id)
        if key is None:
            return None
        if subject not in (event.user_id, event.session_id):
            # The subject names the key; it must be the event's own.
            raise DecryptionError(
                f"a sealed message of session {event.session_id!r} names subject "
                f"{subject!r}, which is neither its user nor its session"
            )
        return open_message(event, key)

    def close(self) -> None:
        """Release the Kafka clients."""
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self.settings.publish_timeout_s)
                self._producer = None
            self._consumer.close(autocommit=False)


def ensure_keys_topic(settings: Settings) -> None:
    """Create the compacted key store topic ``<topic>.keys`` unless it exists."""
    ensure_topic(
        settings.keys_topic,
        1,
        settings.replication_factor,
        settings=settings,
        config=KEYS_TOPIC_CONFIG,
    )


def key_store_of(settings: Settings) -> DataKeyStore | None:
    """The deployment's key store; ``None`` when encryption is off (``CHATLOG_ENCRYPTION_KEY``)."""
    if not settings.encryption_key:
        key_encryption_keys(None, settings.encryption_old_keys)  # refuses old keys alone
        return None
    return DataKeyStore(settings)


__all__ = [
    "KEYS_TOPIC_CONFIG",
    "DataKeyStore",
    "KeyEncryptionKey",
    "RotationReport",
    "ensure_keys_topic",
    "key_store_of",
]
