"""Publishing chat events to the log: :class:`EventProducer`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from chatlog.errors import InvalidMessageError, MessageSerializationError, MessageTooLargeError
from chatlog.producers.key_store import DataKeyStore, key_store_of
from chatlog.producers.records import EncodedEvent, LogPosition
from chatlog.producers.size_limit import check_event_size
from chatlog.schemas.codec import CONTENT_TYPE, EventCodec
from chatlog.schemas.events import ChatEvent
from chatlog.settings import Settings
from chatlog.wakeups import WakeupPublisher

__all__ = ["EncodedEvent", "EventProducer", "LogPosition", "PublishTransport", "encode_event",
           "sized_record", "typed_encode"]


class PublishTransport(Protocol):
    """The Kafka client under an :class:`EventProducer` (``Settings.transport``)."""

    def send(self, topic: str, records: Sequence[EncodedEvent]) -> list[LogPosition]:
        """Send ``records`` in order; return their positions once all are acknowledged."""

    async def asend(self, topic: str, records: Sequence[EncodedEvent]) -> list[LogPosition]:
        """Async :meth:`send`."""

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is pending (up to ``timeout_s``) and release the connection."""


class EventProducer:
    """Publishes chat events to the topic, keyed by session id, and waits for acks.

    The producer is idempotent with ``acks=all``: a publish returns only once
    every in-sync replica has the events, and retries never duplicate them.
    The key is the session id's UTF-8 bytes and the partitioner murmur2, the
    partition a Java client would pick for the same key. The Kafka client is
    ``Settings.transport``: kafka-python (the default) or confluent-kafka
    (``CHATLOG_TRANSPORT=confluent``, a fraction of the CPU per append).
    Thread-safe; share one per process.

    With ``CHATLOG_WAKEUP`` on (the default), every acknowledged publish to the
    chat or checkpoint topic is announced to projectors (:attr:`wakeups`).

    With ``CHATLOG_ENCRYPTION_KEY`` set, every message is sealed under its
    subject's data key before it is encoded (:attr:`key_store`): no message
    field but its type and id reaches Kafka in clear.

    Raises:
        BrokerUnavailableError: (kafka-python) no broker answered within the publish timeout.
        ConfigurationError: (confluent) confluent-kafka is missing or the settings
            cannot be expressed for it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        codec: EventCodec | None = None,
        key_store: DataKeyStore | None = None,
    ) -> None:
        self.settings = settings
        #: Announces acknowledged writes to projectors; ``None`` with ``CHATLOG_WAKEUP`` off.
        self.wakeups = WakeupPublisher.of(settings)
        self.codec = codec or EventCodec()
        self._owns_key_store = key_store is None
        #: The data keys messages are sealed under; ``None`` when encryption is off.
        self.key_store = key_store if key_store is not None else key_store_of(settings)
        self._transport = _transport(settings)

    @property
    def transport(self) -> PublishTransport:
        """The Kafka client's transport the settings chose (``Settings.transport``)."""
        return self._transport

    def encode(self, event: ChatEvent) -> EncodedEvent:
        """Encode ``event`` (sealed when encryption is on) and check it against the size limit.

        See :func:`encode_event`.

        Raises:
            UnsealableEventError: encryption is on and ``event``'s payload is
                not a chatlog event record; nothing is encoded.
        """
        sealed = None if self.key_store is None else self.key_store.seal_event(event)
        return encode_event(self.codec, event, self.settings.max_event_bytes, sealed=sealed)

    def publish(self, events: Sequence[ChatEvent]) -> list[LogPosition]:
        """Publish ``events`` in order and wait until the broker acknowledged all of them.

        Every event is encoded and size-checked before the first is sent, so a
        bad event publishes nothing. Returns each event's position.

        Raises:
            MessageTooLargeError: an event is over the size limit (nothing sent).
            PublishError: the broker did not acknowledge within the publish timeout.
        """
        encoded = [self.encode(e) for e in events]
        return self._acknowledged(
            self.settings.topic, self._transport.send(self.settings.topic, encoded)
        )

    def send_encoded(self, topic: str, records: Sequence[EncodedEvent]) -> list[LogPosition]:
        """Send pre-encoded records to ``topic`` and wait for every acknowledgement.

        Raises:
            BrokerUnavailableError: not acknowledged within the publish timeout.
            PublishError: the broker refused a record, or the producer is closed.
        """
        return self._acknowledged(topic, self._transport.send(topic, records))

    def _acknowledged(self, topic: str, positions: list[LogPosition]) -> list[LogPosition]:
        if self.wakeups is not None:
            self.wakeups.acknowledged(topic, positions)
        return positions

    async def apublish(self, events: Sequence[ChatEvent]) -> list[LogPosition]:
        """Async :meth:`publish`: awaits the acknowledgements without blocking the loop."""
        if self.key_store is None:
            encoded = [self.encode(e) for e in events]
        else:
            # Sealing may first publish a subject's new data key, or read the key
            # store: Kafka round trips that must not block the loop.
            encoded = await asyncio.to_thread(lambda: [self.encode(e) for e in events])
        return self._acknowledged(
            self.settings.topic, await self._transport.asend(self.settings.topic, encoded)
        )

    async def asend_encoded(
        self, topic: str, encoded: Sequence[EncodedEvent]
    ) -> list[LogPosition]:
        """Async :meth:`send_encoded`: awaits the acknowledgements without blocking the loop."""
        return self._acknowledged(topic, await self._transport.asend(topic, encoded))

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is pending (up to ``timeout_s``) and close the connection."""
        self._transport.close(timeout_s)
        if self.wakeups is not None:
            self.wakeups.close()
        if self._owns_key_store and self.key_store is not None:
            self.key_store.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def encode_event(
    codec: EventCodec,
    event: ChatEvent,
    max_event_bytes: int,
    *,
    sealed: ChatEvent | None = None,
) -> EncodedEvent:
    """``event`` encoded for the log, checked against the size limit; never sends anything.

    ``sealed`` is ``event`` with its message encrypted (encryption on): what
    is encoded, while the read model's size check still sees ``event``.

    Raises:
        MessageTooLargeError: the encoded event, or the JSON the read model
            would store for its message, exceeds ``max_event_bytes``.
        InvalidMessageError: a text field is not valid Unicode (a lone surrogate).
        MessageSerializationError: a field does not fit the Avro schema.
    """
    record = sized_record(
        f"event for session {event.session_id!r}",
        event.session_id,
        lambda: codec.encode(event if sealed is None else sealed),
        headers=[
            ("event-type", event.event_type.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ],
        max_event_bytes=max_event_bytes,
    )
    check_event_size(event, record.value, max_event_bytes, plain=sealed is None)
    return record


def sized_record(
    what: str,
    key: str,
    encode: Callable[[], bytes],
    *,
    headers: list[tuple[str, bytes]],
    max_event_bytes: int,
) -> EncodedEvent:
    """The record of ``encode()`` keyed by ``key``, its encoder's failures typed, size checked.

    ``what`` names the event in errors (``"event for session 'abc'"``).

    Raises:
        MessageTooLargeError: the encoded event exceeds ``max_event_bytes``.
        InvalidMessageError: a text field is not valid Unicode (a lone surrogate).
        MessageSerializationError: a field does not fit the Avro schema.
    """
    value = typed_encode(what, encode)
    if len(value) > max_event_bytes:
        raise MessageTooLargeError(
            f"{what} is {len(value)} bytes, over the limit of {max_event_bytes} "
            "(CHATLOG_MAX_EVENT_BYTES)"
        )
    return EncodedEvent(key.encode("utf-8"), value, headers)


def typed_encode(what: str, encode: Callable[[], bytes]) -> bytes:
    """``encode()``, with the encoder's failures raised as chatlog's typed errors.

    Raises:
        InvalidMessageError: a text field is not valid Unicode (a lone surrogate).
        MessageSerializationError: a field does not fit the Avro schema.
    """
    try:
        return encode()
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(
            f"{what} holds text that is not valid Unicode ({exc.reason}); replace lone "
            "surrogates before writing"
        ) from exc
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise MessageSerializationError(f"{what} does not fit the event schema: {exc}") from exc


def _transport(settings: Settings) -> PublishTransport:
    if settings.transport == "confluent":
        # Imported here: confluent-kafka is an optional extra.
        from chatlog.producers.confluent_transport import ConfluentTransport

        return ConfluentTransport(settings)
    from chatlog.producers.kafka_python_transport import KafkaPythonTransport

    return KafkaPythonTransport(settings)
