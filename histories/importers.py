"""Importing histories into the log: chatlog exports and existing LangChain stores.

Sources (each yields :class:`~chatlog.histories.export.SessionExport`):

* :func:`read_export` — a chatlog JSON or JSON Lines export, or a bare JSON
  list in ``messages_to_dict`` form (with ``session_id`` given).
* :func:`read_langchain_redis` — every session under a langchain-community
  ``RedisChatMessageHistory`` key prefix (lists of ``message_to_dict`` JSON,
  newest first).
* :func:`read_langchain_sql` — every session of a ``SQLChatMessageHistory``
  table (``id``, ``session_id``, ``message``), on any SQLAlchemy URL.

:func:`import_sessions` publishes them. It is idempotent on re-run and under
retries because it rests on message ids: a message of the source without an
``id`` gets one derived from its place in the source (the session id and its
index, :func:`import_message_id`, never its content), so every run of the
same import sends the same ids and the projector appends each id once, even
when a run crashed or timed out after publishing and before its writes were
projected. A session whose projected history is a prefix of the imported one
(by ids, or by content for sessions imported before ids) gets the tail, an
identical one nothing; a session holding other messages is reported as a
conflict and left alone. It waits for its own writes to be projected.

Owners are never taken from the input unless the caller says so:
:func:`import_sessions` imports every session under the ``user_id`` it is
given, or, with ``trust_file_owners=True``, under the owner the source names;
without either it raises :class:`~chatlog.errors.ImportOwnerError` (a file
claiming ``alice`` must not append to alice's sessions). Input nested deeper
than :data:`~chatlog.histories.import_bounds.MAX_IMPORT_NESTING` levels
raises :class:`~chatlog.errors.ImportFormatError` before it is parsed.

Pickle is never loaded: input that is a pickle (a ``.pkl``/``.pickle`` file,
or bytes starting with a pickle protocol marker) raises
:class:`~chatlog.errors.UnsafeInputError`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from langchain_core.messages import BaseMessage, messages_from_dict, messages_to_dict

from chatlog.errors import (
    ConfigurationError,
    EncryptionKeyRequiredError,
    ImportFormatError,
    ImportOwnerError,
    ReadModelError,
    UnsafeInputError,
)
from chatlog.histories.export import EXPORT_FORMAT, SessionExport, open_sealed_messages
from chatlog.histories.import_bounds import check_nesting, loads_bounded
from chatlog.histories.store import ChatLog
from chatlog.identifiers import validate_session_id, validate_user_id
from chatlog.producers.key_store import DataKeyStore

#: File name endings refused without reading the file.
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pck", ".p"})
#: Key prefix of langchain-community's ``RedisChatMessageHistory``.
LANGCHAIN_REDIS_PREFIX = "message_store:"
#: Table name of langchain-community's ``SQLChatMessageHistory``.
LANGCHAIN_SQL_TABLE = "message_store"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


__all__ = [
    "ImportFormatError",
    "ImportOwnerError",
    "ImportProgress",
    "import_sessions",
    "read_export",
    "read_langchain_redis",
    "read_langchain_sql",
    "refuse_pickle",
]


def refuse_pickle(data: bytes | str, what: str) -> None:
    """Raise :class:`UnsafeInputError` if ``data`` looks like a pickle.

    Every pickle protocol from 2 on starts with ``0x80`` and the protocol
    number; JSON text never starts with that byte.
    """
    head = data[:1].encode("latin-1", "replace") if isinstance(data, str) else bytes(data[:1])
    if head == b"\x80":
        raise UnsafeInputError(
            f"{what} is a Python pickle; chatlog never loads pickles (they can run code). "
            "Convert it to JSON with langchain_core.messages.messages_to_dict first"
        )


def _messages(items: Any, what: str) -> tuple[BaseMessage, ...]:
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and "type" in i and "data" in i for i in items
    ):
        raise ImportFormatError(
            f"{what} is not a list of messages in messages_to_dict form "
            '([{"type": ..., "data": {...}}, ...])'
        )
    try:
        return tuple(messages_from_dict(items))
    except RecursionError as exc:
        raise ImportFormatError(f"{what} is nested too deeply to rebuild") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise ImportFormatError(f"{what} holds a message LangChain cannot rebuild: {exc}") from exc


def _session(
    obj: Any, what: str, user_id: str | None, key_store: DataKeyStore | None = None
) -> SessionExport:
    if not isinstance(obj, dict) or "session_id" not in obj or (
        "messages" not in obj and "sealed" not in obj
    ):
        raise ImportFormatError(f"{what} is not a session object with session_id and messages")
    session_id = validate_session_id(obj["session_id"])
    items = obj.get("messages")
    if "sealed" in obj:
        if key_store is None:
            raise EncryptionKeyRequiredError(
                f"{what} is an encrypted export: set CHATLOG_ENCRYPTION_KEY to the "
                "key-encryption key of the deployment that wrote it"
            )
        items = open_sealed_messages(
            session_id, validate_user_id(obj.get("user_id")), obj["sealed"], key_store
        )
        if items is None:  # its subject was erased: nothing of it can be read
            owner = user_id if user_id is not None else validate_user_id(obj.get("user_id"))
            return SessionExport(
                session_id, owner, owner_from_source=user_id is None, shredded=True
            )
    if user_id is not None:
        return SessionExport(session_id, user_id, _messages(items, what))
    owner = validate_user_id(obj.get("user_id"))
    return SessionExport(session_id, owner, _messages(items, what), owner_from_source=True)


def read_export(
    source: str | Path | bytes,
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    key_store: DataKeyStore | None = None,
) -> list[SessionExport]:
    """Read a chatlog export (JSON or JSON Lines) or a bare ``messages_to_dict`` list.

    Args:
        source: A file path, or the file's bytes.
        session_id: The session of a bare message list (required for that form).
        user_id: Owner to give every session (default: the one in the export,
            which :func:`import_sessions` only uses with ``trust_file_owners=True``).
        key_store: The data keys that open an encrypted export's sessions
            (``chatlog export --encrypt``); a session whose key was destroyed
            comes back with ``shredded`` set and no messages.

    Raises:
        UnsafeInputError: the input is a pickle (nothing of it is loaded).
        ImportFormatError: the input is neither form.
        EncryptionKeyRequiredError: the export is encrypted and ``key_store`` is ``None``.
        DecryptionError: a sealed session does not open (altered or moved).
    """
    if isinstance(source, bytes):
        data, what = source, "the input"
    else:
        path = Path(source)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeInputError(
                f"{path} is a pickle file by its name; chatlog never loads pickles. "
                "Export the messages as JSON (messages_to_dict) instead"
            )
        data, what = path.read_bytes(), str(path)
    refuse_pickle(data, what)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{what} is not UTF-8 text (JSON or JSON Lines)") from exc
    check_nesting(text, what)
    try:
        document: Any = json.loads(text)
    except ValueError:
        document = None
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            objects = [json.loads(line) for line in lines]
        except ValueError as exc:
            raise ImportFormatError(f"{what} is neither JSON nor JSON Lines: {exc}") from exc
        return [
            _session(o, f"{what} line {n}", user_id, key_store)
            for n, o in enumerate(objects, 1)
        ]
    if isinstance(document, dict) and document.get("format") == EXPORT_FORMAT:
        return [_session(o, what, user_id, key_store) for o in document.get("sessions", [])]
    if isinstance(document, dict) and "session_id" in document:
        return [_session(document, what, user_id, key_store)]
    if isinstance(document, list):
        if session_id is None:
            raise ImportFormatError(
                f"{what} is a bare message list: give the session id to import it into"
            )
        return [
            SessionExport(
                validate_session_id(session_id),
                user_id,
                _messages(document, what),
                owner_from_source=user_id is None,
            )
        ]
    raise ImportFormatError(f"{what} is not a chatlog export nor a messages_to_dict list")


def read_langchain_redis(
    client: redis.Redis,
    prefix: str = LANGCHAIN_REDIS_PREFIX,
    *,
    user_id: str | None = None,
) -> Iterator[SessionExport]:
    """Yield every session stored by ``RedisChatMessageHistory`` under ``prefix``.

    ``RedisChatMessageHistory`` keeps one list per session at ``prefix +
    session_id``, newest message first (LPUSH); sessions come out in key order
    with messages oldest first. Keys under the prefix that are not lists are
    skipped.

    Raises:
        UnsafeInputError: a stored value is a pickle.
        ReadModelError: the source Redis could not be read.
    """
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    try:
        keys = sorted(client.scan_iter(match=pattern, count=1000))
        for key in keys:
            if client.type(key) not in (b"list", "list"):
                continue
            values = client.lrange(key, 0, -1)
            name = key.decode() if isinstance(key, bytes) else str(key)
            what = f"Redis key {name!r}"
            items = []
            for value in reversed(values):
                refuse_pickle(value, what)
                try:
                    items.append(loads_bounded(value, what))
                except ValueError as exc:
                    raise ImportFormatError(f"{what} holds a value that is not JSON") from exc
            yield SessionExport(
                validate_session_id(name[len(prefix) :]),
                user_id,
                _messages(items, what),
                owner_from_source=user_id is None,
            )
    except redis.RedisError as exc:
        raise ReadModelError(f"reading the LangChain Redis store failed: {exc}") from exc


def read_langchain_sql(
    url: str | Any, table: str = LANGCHAIN_SQL_TABLE, *, user_id: str | None = None
) -> Iterator[SessionExport]:
    """Yield every session of a ``SQLChatMessageHistory`` table, messages in ``id`` order.

    Args:
        url: A SQLAlchemy URL (``sqlite:///chat.db``, ``postgresql+psycopg://...``)
            or an ``Engine``.
        table: The table name (``message_store`` by default).
        user_id: Owner to give every imported session.

    Raises:
        ConfigurationError: SQLAlchemy is not installed, or the table name is unsafe.
        UnsafeInputError: a stored message is a pickle.
        ImportFormatError: a stored message is not ``message_to_dict`` JSON.
    """
    try:
        import sqlalchemy as sa
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "importing from SQL needs SQLAlchemy: pip install 'chatlog[import]'"
        ) from exc
    if not _IDENTIFIER.match(table):
        raise ConfigurationError(f"table name {table!r} is not a plain SQL identifier")
    engine = sa.create_engine(url) if isinstance(url, str) else url
    schema, _, name = table.rpartition(".")
    rows = sa.table(name, sa.column("id"), sa.column("session_id"), sa.column("message"))
    if schema:
        rows.schema = schema
    query = sa.select(rows.c.session_id, rows.c.message).order_by(rows.c.session_id, rows.c.id)
    try:
        with engine.connect() as connection:
            current: str | None = None
            items: list[Any] = []
            for session_id, message in connection.execute(query):
                if session_id != current:
                    if current is not None:
                        yield _sql_session(current, items, table, user_id)
                    current, items = session_id, []
                what = f"table {table} session {session_id!r}"
                raw = message if isinstance(message, (bytes, str)) else str(message)
                refuse_pickle(raw, what)
                try:
                    items.append(loads_bounded(raw, what))
                except ValueError as exc:
                    raise ImportFormatError(f"{what} holds a message that is not JSON") from exc
            if current is not None:
                yield _sql_session(current, items, table, user_id)
    except sa.exc.SQLAlchemyError as exc:
        raise ImportFormatError(f"reading table {table!r} failed: {exc}") from exc
    finally:
        if isinstance(url, str):
            engine.dispose()


def _sql_session(
    session_id: str, items: list[Any], table: str, user_id: str | None
) -> SessionExport:
    what = f"table {table} session {session_id!r}"
    return SessionExport(
        validate_session_id(session_id),
        user_id,
        _messages(items, what),
        owner_from_source=user_id is None,
    )


@dataclass(slots=True)
class ImportProgress:
    """Where an import stands; handed to ``on_progress`` after every session."""

    sessions: int = 0
    messages_published: int = 0
    messages_skipped: int = 0
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    #: Sessions of an encrypted export whose subject was erased: not imported.
    shredded: list[str] = field(default_factory=list)
    current: str | None = None


def import_sessions(
    chatlog: ChatLog,
    sessions: Iterable[SessionExport],
    *,
    user_id: str | None = None,
    trust_file_owners: bool = False,
    on_progress: Callable[[ImportProgress], None] | None = None,
) -> ImportProgress:
    """Publish ``sessions`` into the log, idempotently (see the module docs).

    Each session is written through a history opened with its owner, so the
    usual ownership rules apply. The owner is ``user_id`` when given (for
    every session, whatever the source says); else the one the reader was
    given (``read_export(..., user_id=...)``); else, only with
    ``trust_file_owners=True``, the one the source names (or none).

    Raises:
        ImportOwnerError: a session's owner would come from the source itself
            and ``trust_file_owners`` is not set; nothing of that session (nor
            of any later one) is published.
        SessionOwnershipError: a session already belongs to another user.
        ProjectionLagError: the projector did not apply the import's writes in time.
    """
    owner_override = validate_user_id(user_id)
    progress = ImportProgress()
    for session in sessions:
        progress.current = session.session_id
        if session.shredded:
            # Erased since the export was written: nothing of it may come back.
            progress.shredded.append(session.session_id)
            if on_progress is not None:
                on_progress(progress)
            continue
        owner = owner_override if owner_override is not None else session.user_id
        if owner_override is None and session.owner_from_source and not trust_file_owners:
            claimed = f"user {owner!r}" if owner is not None else "no owner"
            raise ImportOwnerError(
                f"session {session.session_id!r} names {claimed} in the imported data, "
                "which anyone could have written; import it for a user (user_id=..., "
                "--user) or accept the source's owners (trust_file_owners=True, "
                "--trust-file-owners)"
            )
        history = chatlog.history(session.session_id, owner)
        held = history.messages
        messages = _with_import_ids(session.session_id, session.messages)
        # Compared without ids: a session imported before ids existed holds the
        # same messages under other ids, and a source changed since the last run
        # (same places, so the same ids, other content) is a conflict to report.
        existing, incoming = _comparable(held), _comparable(messages)
        if existing != incoming[: len(existing)]:
            progress.conflicts.append(session.session_id)
        elif len(existing) == len(incoming):
            progress.unchanged.append(session.session_id)
            progress.messages_skipped += len(incoming)
        else:
            # A tail sent before (a crashed run) is dropped by the projector by id.
            history.add_messages(messages[len(existing) :])
            # Read back (read-your-writes) so that a re-run sees this import.
            history.snapshot(limit=1)
            progress.messages_published += len(incoming) - len(existing)
            progress.messages_skipped += len(existing)
        progress.sessions += 1
        if on_progress is not None:
            on_progress(progress)
    progress.current = None
    return progress


#: The uuid5 namespace of :func:`import_message_id`.
IMPORT_ID_NAMESPACE = uuid.UUID("6f1c3c1e-6a43-4c38-9d5e-2f0b8c3a7d11")


def import_message_id(session_id: str, index: int) -> str:
    """The id an imported message without one gets: from its session and index, not content."""
    return str(uuid.uuid5(IMPORT_ID_NAMESPACE, f"{session_id}\x00{index}"))


def _with_import_ids(session_id: str, messages: Iterable[BaseMessage]) -> list[BaseMessage]:
    return [
        m if m.id else m.model_copy(update={"id": import_message_id(session_id, index)})
        for index, m in enumerate(messages)
    ]


def _comparable(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """``messages_to_dict`` without ids (sessions imported before ids compare by content)."""
    items = messages_to_dict(messages)
    for item in items:
        item["data"].pop("id", None)
    return items
