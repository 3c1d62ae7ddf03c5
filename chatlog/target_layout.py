"""The table and item layout of the SQL and DynamoDB read models, named in this one place.

Like :mod:`chatlog.keys` for Redis, it lives in the base layer because the
writers (``projector/targets``) and the readers (``histories/target_reader``)
both need it and ``histories`` must not import the projector.

The messages themselves are in LangChain's layouts (``message_store`` for
``SQLChatMessageHistory``, ``SessionId``/``History`` for
``DynamoDBChatMessageHistory``); everything else is chatlog's own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

#: The messages table LangChain's SQLChatMessageHistory reads by default.
MESSAGE_TABLE = "message_store"

#: Keys of a session's persisted state (the fold's ExpectedSession fields) that readers use.
STATE_OFFSET = "offset"
STATE_PARTITION = "partition"
STATE_TTL = "ttl_ms"
#: The key of a session's conditional-append verdicts in its state (offset -> [verdict, ms]).
STATE_VERDICTS = "verdicts"

#: LangChain's DynamoDB layout: the key attribute and the messages attribute.
DYNAMODB_KEY = "SessionId"
DYNAMODB_HISTORY = "History"
#: The sort key value of a session's meta item, and the partition key of positions.
DYNAMODB_META = "meta"
DYNAMODB_POSITIONS = "positions"


class SqlTables(NamedTuple):
    """The tables of one SQL read model."""

    messages: str
    sessions: str
    user_sessions: str
    positions: str


def sql_tables(message_table: str = MESSAGE_TABLE) -> SqlTables:
    """The tables beside ``message_table``: ``chatlog_*``, or ``<table>_chatlog_*``.

    So several read models (one per messages table) can share a database.
    """
    own = "chatlog" if message_table == MESSAGE_TABLE else f"{message_table}_chatlog"
    return SqlTables(message_table, f"{own}_sessions", f"{own}_user_sessions", f"{own}_positions")


class SqlCheckpointTables(NamedTuple):
    """The LangGraph saver's tables of one SQL read model (chatlog's own layout).

    Fields joined with NUL (checkpoint members, blob, write and chunk fields,
    :mod:`chatlog.schemas.checkpoint_stored`) are stored as bytes: PostgreSQL
    text cannot hold NUL.
    """

    threads: str
    checkpoints: str
    blobs: str
    writes: str
    chunks: str
    positions: str


def sql_checkpoint_tables(message_table: str = MESSAGE_TABLE) -> SqlCheckpointTables:
    """The checkpoint tables beside ``message_table`` (same prefix as :func:`sql_tables`)."""
    own = "chatlog" if message_table == MESSAGE_TABLE else f"{message_table}_chatlog"
    return SqlCheckpointTables(
        f"{own}_threads",
        f"{own}_checkpoints",
        f"{own}_checkpoint_blobs",
        f"{own}_checkpoint_writes",
        f"{own}_checkpoint_chunks",
        f"{own}_checkpoint_positions",
    )


def dynamodb_meta_table(table: str) -> str:
    """The table of chatlog's own items beside LangChain's ``table`` (key ``pk``/``sk``)."""
    return f"{table}.chatlog"


def dynamodb_session_pk(session_id: str) -> str:
    """The partition key of a session's meta item."""
    return f"s#{session_id}"


def dynamodb_user_pk(user_id: str) -> str:
    """The partition key of a user's session index (one item per session)."""
    return f"u#{user_id}"


#: Sort key prefixes of a thread's items (after the prefix: the NUL-joined field of
#: :mod:`chatlog.schemas.checkpoint_stored`), and the sort key of its meta item.
DYNAMODB_CHECKPOINT = "c#"
DYNAMODB_BLOB = "b#"
DYNAMODB_WRITE = "w#"
DYNAMODB_CHUNK = "k#"
#: The partition key of the checkpoint topic's positions (sort key: the partition).
DYNAMODB_CHECKPOINT_POSITIONS = "checkpoint-positions"


def dynamodb_thread_pk(thread_id: str) -> str:
    """The partition key of a LangGraph thread's items (meta, checkpoints, blobs, writes)."""
    return f"t#{thread_id}"


def dynamodb_user_threads_pk(user_id: str) -> str:
    """The partition key of a user's thread index (one item per thread)."""
    return f"ut#{user_id}"


def dynamodb_run_pk(run_id: str) -> str:
    """The partition key of a run's checkpoints (sort key: ``thread NUL ns NUL id``)."""
    return f"r#{run_id}"


def dynamodb_session_of(pk: str) -> str | None:
    """The session id of a meta item's partition key; ``None`` for other items."""
    prefix = dynamodb_session_pk("")
    return pk[len(prefix) :] if pk.startswith(prefix) else None


def to_dynamodb_value(value: Any) -> Any:
    """A JSON value as DynamoDB stores it: every float a ``Decimal`` (boto3 refuses floats)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_dynamodb_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_dynamodb_value(v) for v in value]
    return value


def from_dynamodb_value(value: Any) -> Any:
    """A value read from DynamoDB as JSON: a number ``int`` when integral, else ``float``."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamodb_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamodb_value(v) for v in value]
    return value
