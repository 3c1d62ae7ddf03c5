"""Avro single-object encoding of :class:`~chatlog.schemas.events.ChatEvent`.

Wire format (Avro spec, "Single object encoding"): the two bytes ``C3 01``,
the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
parsing canonical form, then the Avro binary body. Every schema version ever
released is kept in ``schemas/avsc``; the decoder finds the writer schema by
fingerprint and resolves it against the newest (reader) schema, so old
events stay readable forever.

This is the only module that imports fastavro.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from chatlog.errors import EventDecodeError
from chatlog.schemas import event_reader, event_writer
from chatlog.schemas.events import (
    ChatEvent,
    InvalidToolCall,
    MessageAppended,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
    Payload,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    ToolCall,
    UsageMetadata,
    UserDeleted,
)

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
CONTENT_TYPE = "application/vnd.chatlog.event+avro"

_VERSION = re.compile(r"^(?P<name>[\w.]+)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One released writer schema: its name, version, fingerprint and parsed form."""

    name: str
    version: int
    fingerprint: bytes
    parsed: Any


def _load_versions() -> list[SchemaVersion]:
    versions = []
    for entry in resources.files("chatlog.schemas").joinpath("avsc").iterdir():
        match = _VERSION.match(entry.name)
        if match is None:
            continue
        raw = json.loads(entry.read_text(encoding="utf-8"))
        # Keep fastavro's "already parsed" hint: without it every read and write
        # parses the whole schema again, which doubled the cost of each event.
        parsed = parse_schema(raw)
        canonical = to_parsing_canonical_form(parsed)
        digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        # The single-object header stores the fingerprint little-endian; the
        # hex digest from fastavro is big-endian.
        versions.append(SchemaVersion(match["name"], int(match["version"]), digest[::-1], parsed))
    return sorted(versions, key=lambda v: (v.name, v.version))


#: Record name of the chat log's envelope; other record families (such as
#: ``chatlog.CheckpointEvent``) live in the same registry under their own name.
CHAT_EVENT = "chatlog.ChatEvent"

#: The event type a codec reads and writes.
E = TypeVar("E")


class SchemaRegistry:
    """Every released schema of every record family, addressable by single-object fingerprint."""

    def __init__(self, versions: list[SchemaVersion] | None = None) -> None:
        self.versions = versions if versions is not None else _load_versions()
        if not self.versions:
            raise RuntimeError("no Avro schemas found in chatlog.schemas/avsc")
        self._by_fingerprint = {v.fingerprint: v for v in self.versions}
        # versions are sorted by (name, version), so the last one per name wins.
        self._latest = {v.name: v for v in self.versions}
        self.latest = self._latest.get(CHAT_EVENT, self.versions[-1])

    def latest_of(self, name: str) -> SchemaVersion:
        """The newest released schema of the record family ``name`` (``chatlog.ChatEvent``, ...)."""
        try:
            return self._latest[name]
        except KeyError:
            raise RuntimeError(f"no Avro schema named {name!r} in chatlog.schemas/avsc") from None

    def writer_schema(self, fingerprint_bytes: bytes) -> SchemaVersion:
        """The schema whose single-object fingerprint is ``fingerprint_bytes``.

        Raises:
            EventDecodeError: no released schema has that fingerprint.
        """
        try:
            return self._by_fingerprint[fingerprint_bytes]
        except KeyError:
            raise EventDecodeError(
                f"unknown schema fingerprint {fingerprint_bytes.hex()}: the event was written "
                "with a schema this chatlog version does not ship; upgrade chatlog"
            ) from None


class SingleObjectCodec(Generic[E]):
    """Avro single-object encoding of one record family, resolved by fingerprint.

    Subclasses name the family and convert between their event dataclasses
    and fastavro's dicts; the framing, the schema lookup, the family check and
    the corrupt-input handling are here once.
    """

    #: Full name of the record family this codec reads and writes.
    family: str = CHAT_EVENT

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or SchemaRegistry()
        self._writer = self.registry.latest_of(self.family)
        self._header = MAGIC + self._writer.fingerprint

    def encode(self, event: E) -> bytes:
        """Serialize ``event`` with the newest schema of the family."""
        buffer = io.BytesIO()
        buffer.write(self._header)
        fastavro.schemaless_writer(buffer, self._writer.parsed, self._to_avro(event))
        return buffer.getvalue()

    def decode(self, data: bytes) -> E:
        """Deserialize one event, resolving its writer schema by fingerprint.

        Raises:
            EventDecodeError: ``data`` is not a complete, valid event of the family.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EventDecodeError(f"expected bytes, got {type(data).__name__}")
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise EventDecodeError("not an Avro single-object encoded event (bad magic bytes)")
        writer = self.registry.writer_schema(bytes(data[2:HEADER_SIZE]))
        fast = self._read_fast(data, writer)
        if fast is not None:
            return fast
        if writer.name != self._writer.name:
            raise EventDecodeError(
                f"a {writer.name} event is not a {self._writer.name}: it was published "
                "to the wrong topic"
            )
        reader = None if writer is self._writer else self._writer.parsed
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(
                buffer,
                writer.parsed,
                reader,
                return_record_name=True,
                return_record_name_override=True,
            )
            event = self._from_avro(record)
        except EventDecodeError:
            raise
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise EventDecodeError(f"corrupt event body: {type(exc).__name__}: {exc}") from exc
        if buffer.tell() != len(data):
            raise EventDecodeError(
                f"corrupt event body: {len(data) - buffer.tell()} trailing bytes after the record"
            )
        return event

    def _read_fast(self, data: bytes, writer: SchemaVersion) -> E | None:
        """A decoder faster than fastavro for some writer schema, or ``None`` to use fastavro."""
        return None

    def _to_avro(self, event: E) -> dict[str, Any]:
        raise NotImplementedError

    def _from_avro(self, record: Any) -> E:
        raise NotImplementedError


class EventCodec(SingleObjectCodec[ChatEvent]):
    """Encode and decode chat events in Avro single-object encoding."""

    family = CHAT_EVENT

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        super().__init__(registry)
        # The writer schema the hand-written reader decodes without fastavro.
        self._fast = next(
            (v for v in self.registry.versions if (v.name, v.version) == event_reader.SCHEMA),
            None,
        )
        # Older schemas whose bodies it reads too: v3 and v4 only added payload
        # branches at the end of the union, so a v2 or v3 body is a v4 body byte
        # for byte; each is read with the branches its schema had.
        self._fast_older = {
            v.fingerprint: (v, event_reader.OLDER_SCHEMAS[(v.name, v.version)])
            for v in self.registry.versions
            if (v.name, v.version) in event_reader.OLDER_SCHEMAS
        }
        # Whether the newest schema is the one the hand-written writer lays out.
        self._fast_writer = (self._writer.name, self._writer.version) == event_writer.SCHEMA

    @property
    def fast_header(self) -> bytes | None:
        """The single-object header of events the hand-written reader decodes, if any.

        Events that start with it are written with the newest schema, the one
        :mod:`chatlog.schemas.event_reader` reads without fastavro.
        """
        return self._header if self._fast is self._writer else None

    @property
    def fast_headers(self) -> frozenset[bytes]:
        """The single-object headers of every schema the hand-written reader decodes.

        :attr:`fast_header` and those of older schemas whose bodies have the
        same layout (see :data:`~chatlog.schemas.event_reader.OLDER_SCHEMAS`).
        """
        if self._fast is not self._writer:
            return frozenset()
        return frozenset({self._header, *(MAGIC + f for f in self._fast_older)})

    def encode(self, event: ChatEvent) -> bytes:
        """Serialize ``event`` with the newest schema (by hand where :mod:`event_writer` can)."""
        if self._fast_writer:
            body = event_writer.write_event(event)
            if body is not None:
                return self._header + body
        return super().encode(event)

    def _read_fast(self, data: bytes, writer: SchemaVersion) -> ChatEvent | None:
        if self._fast is not self._writer:
            return None
        if writer is self._fast:
            return event_reader.read_event(bytes(data), HEADER_SIZE)
        older = self._fast_older.get(writer.fingerprint)
        if older is not None and older[0] is writer:
            return event_reader.read_event(bytes(data), HEADER_SIZE, branches=older[1])
        return None

    def _to_avro(self, event: ChatEvent) -> dict[str, Any]:
        return _event_to_avro(event)

    def _from_avro(self, record: Any) -> ChatEvent:
        return event_from_avro(record)


def _event_to_avro(event: ChatEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "session_id": event.session_id,
        "user_id": event.user_id,
        "occurred_at": event.occurred_at,
        "source": event.source,
        "payload": _payload_to_avro(event.payload),
    }


def _payload_to_avro(payload: Payload) -> tuple[str, dict[str, Any]]:
    if isinstance(payload, MessageAppended):
        return ("chatlog.MessageAppended", _message_to_avro(payload))
    if isinstance(payload, MessagesAppended):
        return (
            "chatlog.MessagesAppended",
            {
                "expected_version": payload.expected_version,
                "messages": [_message_to_avro(m) for m in payload.messages],
            },
        )
    if isinstance(payload, SessionCleared):
        return ("chatlog.SessionCleared", {})
    if isinstance(payload, SessionDeleted):
        return ("chatlog.SessionDeleted", {})
    if isinstance(payload, UserDeleted):
        return ("chatlog.UserDeleted", {})
    if isinstance(payload, SessionTtlSet):
        return ("chatlog.SessionTtlSet", {"ttl_ms": payload.ttl_ms})
    if isinstance(payload, MessageSealed):
        return ("chatlog.MessageSealed", _sealed_to_avro(payload))
    if isinstance(payload, MessagesSealed):
        return (
            "chatlog.MessagesSealed",
            {
                "expected_version": payload.expected_version,
                "messages": [_sealed_to_avro(m) for m in payload.messages],
            },
        )
    raise TypeError(f"not a chatlog payload event: {type(payload).__name__}")


def _sealed_to_avro(payload: MessageSealed) -> dict[str, Any]:
    return {
        "subject": payload.subject,
        "key_id": payload.key_id,
        "type": payload.type,
        "id": payload.id,
        "nonce": payload.nonce,
        "ciphertext": payload.ciphertext,
    }


def _message_to_avro(payload: MessageAppended) -> dict[str, Any]:
    return {
        "type": payload.type,
        "content": payload.content if isinstance(payload.content, str) else list(payload.content),
        "name": payload.name,
        "id": payload.id,
        "role": payload.role,
        "tool_calls": [{"name": c.name, "args": c.args, "id": c.id} for c in payload.tool_calls],
        "invalid_tool_calls": [
            {"name": c.name, "args": c.args, "id": c.id, "error": c.error}
            for c in payload.invalid_tool_calls
        ],
        "usage_metadata": None
        if payload.usage_metadata is None
        else {
            "input_tokens": payload.usage_metadata.input_tokens,
            "output_tokens": payload.usage_metadata.output_tokens,
            "total_tokens": payload.usage_metadata.total_tokens,
            "details": payload.usage_metadata.details,
        },
        "tool_call_id": payload.tool_call_id,
        "artifact": payload.artifact,
        "status": payload.status,
        "additional_kwargs": payload.additional_kwargs,
        "response_metadata": payload.response_metadata,
        "extra": payload.extra,
    }


def event_from_avro(record: Any) -> ChatEvent:
    """The :class:`ChatEvent` of a record as fastavro decodes it (the generic read path)."""
    name, body = record["payload"]
    return ChatEvent(
        event_id=str(record["event_id"]),
        session_id=record["session_id"],
        user_id=record["user_id"],
        source=record["source"],
        occurred_at=record["occurred_at"],
        payload=_payload_from_avro(name, body),
    )


def message_record(message: MessageAppended) -> dict[str, Any]:
    """The fields of ``message``'s Avro record, JSON-ready (see :func:`message_from_record`)."""
    return _message_to_avro(message)


def message_from_record(body: dict[str, Any]) -> MessageAppended:
    """The :class:`MessageAppended` of its record's fields (as fastavro or ``json.loads`` give)."""
    return _message_from_avro(body)


def _payload_from_avro(name: str, body: dict[str, Any]) -> Payload:
    if name == "chatlog.MessagesAppended":
        return MessagesAppended(
            expected_version=body["expected_version"],
            messages=tuple(_message_from_avro(m) for m in body["messages"]),
        )
    if name == "chatlog.MessageAppended":
        return _message_from_avro(body)
    if name == "chatlog.SessionCleared":
        return SessionCleared()
    if name == "chatlog.SessionDeleted":
        return SessionDeleted()
    if name == "chatlog.UserDeleted":
        return UserDeleted()
    if name == "chatlog.SessionTtlSet":
        return SessionTtlSet(ttl_ms=body["ttl_ms"])
    if name == "chatlog.MessageSealed":
        return _sealed_from_avro(body)
    if name == "chatlog.MessagesSealed":
        return MessagesSealed(
            expected_version=body["expected_version"],
            messages=tuple(_sealed_from_avro(m) for m in body["messages"]),
        )
    raise EventDecodeError(f"unknown payload record {name!r}: upgrade chatlog")


def _sealed_from_avro(body: dict[str, Any]) -> MessageSealed:
    return MessageSealed(
        subject=body["subject"],
        key_id=body["key_id"],
        type=body["type"],
        id=body["id"],
        nonce=bytes(body["nonce"]),
        ciphertext=bytes(body["ciphertext"]),
    )


def _message_from_avro(body: dict[str, Any]) -> MessageAppended:
    content = body["content"]
    usage = body["usage_metadata"]
    return MessageAppended(
        type=body["type"],
        content=content if isinstance(content, str) else tuple(content),
        name=body["name"],
        id=body["id"],
        role=body["role"],
        tool_calls=tuple(ToolCall(**c) for c in body["tool_calls"]),
        invalid_tool_calls=tuple(InvalidToolCall(**c) for c in body["invalid_tool_calls"]),
        usage_metadata=None if usage is None else UsageMetadata(**usage),
        tool_call_id=body["tool_call_id"],
        artifact=body["artifact"],
        status=body["status"],
        additional_kwargs=body["additional_kwargs"],
        response_metadata=body["response_metadata"],
        extra=body["extra"],
    )
