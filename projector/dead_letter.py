"""The dead-letter topic: where records the projector cannot apply are kept.

A letter must always fit, or one poison record stops its partition: the
projector commits a batch only after its letters are acknowledged, so a
letter the producer refuses would be retried forever. Letters are therefore
bounded by construction (:func:`bounded_letter`): the key and the headers
are cut to fixed sizes, and a value larger than the producer sends is
replaced by a *stub*, a small JSON document naming the original's
coordinates, reason, sizes and SHA-256 hashes. The log keeps the original
at those coordinates. When the broker's limit is below the producer's (a
``message.max.bytes`` under ``CHATLOG_MAX_EVENT_BYTES``), a refused letter
is sent again as a stub; a size refusal is never retried as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from chatlog.errors import RecordTooLargeError
from chatlog.producers.producer import EncodedEvent, EventProducer

log = logging.getLogger("chatlog.projector")

#: Headers added to a dead-lettered record, next to the original ones.
HEADER_REASON = "dlq-reason"
HEADER_TOPIC = "dlq-original-topic"
HEADER_PARTITION = "dlq-original-partition"
HEADER_OFFSET = "dlq-original-offset"
#: The original value's size, on a stub letter (its value is the stub, not the original).
HEADER_VALUE_OMITTED = "dlq-value-omitted"
#: The original key's size and SHA-256, when the letter's key is cut.
HEADER_KEY_TRUNCATED = "dlq-key-truncated"
HEADER_KEY_SHA256 = "dlq-key-sha256"
#: The original headers' size, when some are cut or left out.
HEADER_HEADERS_TRUNCATED = "dlq-headers-truncated"
#: ``stub`` on a stub letter: its value is a :data:`STUB_CONTENT_TYPE` document.
HEADER_LETTER = "dlq-letter"
STUB_CONTENT_TYPE = "application/vnd.chatlog.dead-letter-stub+json"

#: Longest key a letter carries. Session ids are at most 256 bytes, so a
#: longer key is not one; its size and hash identify it.
KEY_LIMIT = 1024
#: Longest header name (characters) and value (bytes) a letter keeps.
HEADER_NAME_LIMIT = 256
HEADER_VALUE_LIMIT = 1024
#: Most bytes of original headers a letter keeps (each header also counts
#: :data:`_HEADER_COST`, so a flood of empty headers is bounded too).
HEADERS_LIMIT = 16 * 1024
#: Longest reason a letter carries.
REASON_LIMIT = 4096
_HEADER_COST = 16


class DeadLetter(NamedTuple):
    """A raw Kafka record that could not be applied, and why."""

    record: Any  # kafka.consumer.fetcher.ConsumerRecord
    reason: str


class DeadLetterQueue:
    """Publishes unapplicable records to ``<topic>.dlq`` with their coordinates.

    The original value is kept byte for byte when it fits the producer's
    limit, so a record can be inspected, fixed and re-published by hand;
    keys and headers are kept up to fixed sizes (see :func:`bounded_letter`).
    """

    def __init__(
        self, producer: EventProducer, topic: str, *, max_value_bytes: int | None = None
    ) -> None:
        """Publish with ``producer`` to ``topic``.

        ``max_value_bytes`` is the largest original value a letter carries
        (default: the producer's ``max_event_bytes``, the most it sends).
        """
        self.producer = producer
        self.topic = topic
        self.max_value_bytes = max_value_bytes or producer.settings.max_event_bytes
        #: Letters the broker refused even as a stub (logged, never retried).
        self.refused = 0

    def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish ``letters`` and wait for the broker's acknowledgement.

        Raises:
            PublishError: the broker did not acknowledge them (an outage: retry).
        """
        if not letters:
            return
        encoded = [bounded_letter(letter, self.max_value_bytes) for letter in letters]
        try:
            self.producer.send_encoded(self.topic, encoded)
        except RecordTooLargeError:
            # The broker takes less than the producer sends. Letters go one by
            # one so that only the refused ones become stubs; those acknowledged
            # before the refusal may be published twice (the topic is
            # at-least-once anyway: a crash before the commit repeats letters).
            for letter, record in zip(letters, encoded, strict=True):
                self._publish_one(letter, record)

    def _publish_one(self, letter: DeadLetter, record: EncodedEvent) -> None:
        for attempt in (record, stub_letter(letter)):
            try:
                self.producer.send_encoded(self.topic, [attempt])
                return
            except RecordTooLargeError:
                continue
        # Even the stub (at most about 32 KiB) is over the broker's limit: retrying cannot
        # help, and waiting would stop the partition. The log keeps the record.
        self.refused += 1
        log.error(
            "the broker refused the dead letter even as a stub; the record stays only in the "
            "log: raise the broker's message.max.bytes",
            extra={
                "topic": letter.record.topic,
                "partition": letter.record.partition,
                "offset": letter.record.offset,
            },
        )


def bounded_letter(letter: DeadLetter, max_value_bytes: int) -> EncodedEvent:
    """The letter for ``letter``: the original with key and headers cut to fixed sizes.

    A value over ``max_value_bytes`` makes it a :func:`stub_letter`. The
    result is at most ``max_value_bytes`` plus about 24 KiB, within the
    producer's request limit (``max_event_bytes`` + 64 KiB).
    """
    record = letter.record
    value = record.value or b""
    if len(value) > max_value_bytes:
        return stub_letter(letter)
    key, key_headers = _bounded_key(record.key)
    headers, cut = _bounded_headers(record.headers)
    headers += _coordinates(letter) + key_headers
    if cut:
        headers.append((HEADER_HEADERS_TRUNCATED, str(_headers_size(record.headers)).encode()))
    return EncodedEvent(key, value, headers)


def stub_letter(letter: DeadLetter) -> EncodedEvent:
    """A letter that stands for a record too large to carry: coordinates, sizes, hashes.

    Its value is a JSON document (:data:`STUB_CONTENT_TYPE`) with the
    original's ``topic``, ``partition``, ``offset``, ``reason``, and the size
    and SHA-256 of its key, value and headers; its headers are the ``dlq-*``
    ones and the original ``event-type``. At most about 32 KiB.
    """
    record = letter.record
    key = record.key or b""
    value = record.value or b""
    raw_headers = record.headers or []
    stub = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "reason": short_reason(letter.reason),
        "key_bytes": len(key),
        "key_sha256": hashlib.sha256(key).hexdigest(),
        "value_bytes": len(value),
        "value_sha256": hashlib.sha256(value).hexdigest(),
        "header_count": len(raw_headers),
        "headers_bytes": _headers_size(raw_headers),
    }
    event_type = [(k, (v or b"")[:HEADER_VALUE_LIMIT]) for k, v in raw_headers if k == "event-type"]
    headers = [
        *event_type[:1],
        ("content-type", STUB_CONTENT_TYPE.encode()),
        (HEADER_LETTER, b"stub"),
        (HEADER_VALUE_OMITTED, str(len(value)).encode()),
    ]
    if raw_headers:
        headers.append((HEADER_HEADERS_TRUNCATED, str(_headers_size(raw_headers)).encode()))
    bounded_key, key_headers = _bounded_key(record.key)
    return EncodedEvent(
        bounded_key,
        json.dumps(stub, sort_keys=True, ensure_ascii=False).encode(),
        headers + _coordinates(letter) + key_headers,
    )


def _coordinates(letter: DeadLetter) -> list[tuple[str, bytes]]:
    record = letter.record
    return [
        (HEADER_REASON, _reason(letter.reason)),
        (HEADER_TOPIC, record.topic.encode()),
        (HEADER_PARTITION, str(record.partition).encode()),
        (HEADER_OFFSET, str(record.offset).encode()),
    ]


def short_reason(reason: str) -> str:
    """``reason`` cut to about :data:`REASON_LIMIT` bytes, its start and end kept.

    A reason can quote a huge key or value; its end usually says what was
    wrong (``... is not the session id 's1'``), so the middle goes.
    """
    raw = reason.encode("utf-8", "replace")
    if len(raw) <= REASON_LIMIT:
        return reason
    half = (REASON_LIMIT - 64) // 2
    cut = len(raw) - 2 * half
    head = raw[:half].decode("utf-8", "ignore")
    tail = raw[-half:].decode("utf-8", "ignore")
    return f"{head}...[{cut} bytes cut]...{tail}"


def key_text(key: bytes | None) -> str:
    """A record key as text for a log line, cut to :data:`KEY_LIMIT` bytes."""
    text = bytes(key or b"")[:KEY_LIMIT].decode("utf-8", "replace")
    return text if key is None or len(key) <= KEY_LIMIT else f"{text}...[{len(key)} bytes]"


def _reason(reason: str) -> bytes:
    return short_reason(reason).encode("utf-8", "replace")[:REASON_LIMIT]


def _bounded_key(key: bytes | None) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The key cut to :data:`KEY_LIMIT`, with headers giving the original's size and hash."""
    if key is None or len(key) <= KEY_LIMIT:
        return key, []
    return key[:KEY_LIMIT], [
        (HEADER_KEY_TRUNCATED, str(len(key)).encode()),
        (HEADER_KEY_SHA256, hashlib.sha256(key).hexdigest().encode()),
    ]


def _bounded_headers(
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> tuple[list[tuple[str, bytes]], bool]:
    """The original headers (``dlq-*`` ones dropped) within the limits; whether any were cut."""
    kept: list[tuple[str, bytes]] = []
    cut = False
    budget = HEADERS_LIMIT
    for name, value in headers or ():
        if name.startswith("dlq-"):
            continue  # a re-dead-lettered letter gets fresh coordinates
        short_name, short_value = name[:HEADER_NAME_LIMIT], (value or b"")[:HEADER_VALUE_LIMIT]
        cost = len(short_name.encode("utf-8", "replace")) + len(short_value) + _HEADER_COST
        if cost > budget:
            return kept, True
        budget -= cost
        cut = cut or short_name != name or len(short_value) != len(value or b"")
        kept.append((short_name, short_value))
    return kept, cut


def _headers_size(headers: Sequence[tuple[str, bytes | None]] | None) -> int:
    return sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in headers or ())


def record_event_type(record: Any) -> str:
    """The ``event-type`` header of a consumed record, ``unknown`` without one."""
    for key, value in record.headers or []:
        if key == "event-type":
            return bytes(value).decode("utf-8", "replace")
    return "unknown"


def log_and_publish(dlq: DeadLetterQueue, letters: Sequence[DeadLetter]) -> bool:
    """Log each letter at ERROR (ids only, never content), then publish them all.

    Returns ``True`` so that a retry loop can tell success from a stop.
    """
    for letter in letters:
        log.error(
            "dead-lettering record: %s",
            short_reason(letter.reason),
            extra={
                "topic": letter.record.topic,
                "partition": letter.record.partition,
                "offset": letter.record.offset,
                "event_type": record_event_type(letter.record),
                # The record key is the session id (an id, never message content).
                "session_id": key_text(letter.record.key),
            },
        )
    dlq.publish(letters)
    return True
