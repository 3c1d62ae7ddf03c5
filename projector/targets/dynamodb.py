"""The DynamoDB target: LangChain's ``DynamoDBChatMessageHistory`` item layout.

URL: ``dynamodb://TABLE?region=REGION&endpoint_url=URL&writers=N`` (all
optional; credentials come from boto3's usual chain; ``writers``: session
transactions in flight at once, 1 to 10, default 1). The messages table is
LangChain's: key ``SessionId`` (string) only, one item per session whose
``History`` attribute is the list of ``message_to_dict`` maps, so
``DynamoDBChatMessageHistory(table_name=TABLE, session_id=...)`` reads
chatlog's sessions. An existing table in that layout is used as it is; a
missing one is created (on-demand billing).

chatlog's own items go in a second table it creates, ``TABLE.chatlog``
(key ``pk``/``sk``, strings), never on LangChain's table:

* ``s#<session>`` / ``meta``: the fold's state as JSON (with the verdicts of
  recent conditional appends), the message count, the expiry and a
  ``version`` that every write is conditional on;
* ``u#<user>`` / ``<session>``: the user's session index (``last_ms``);
* ``positions`` / ``<partition>``: the partition's next offset.

Each session of a batch is written with one ``TransactWriteItems`` (its
``History`` item, its meta item conditional on the version it was read at,
and its user index rows), so data, the session's offset and its listing move
together and a concurrent writer makes the batch fail and retry instead of
losing an update. Index rows of sessions the batch does not write (a
``UserDeleted``) and then the positions (conditional: only forward) follow
the sessions.

Item size: DynamoDB refuses items over 400 KB. An append that would take a
session's ``History`` past :data:`HISTORY_LIMIT_BYTES` is not applied: it
comes back as a refusal (``ItemTooLargeError``'s text, reason
``session-failed``) that the projector dead-letters, and the session keeps
what it had; ``chatlog replay verify`` reports the session as missing
messages. The projector never fails on it.

What DynamoDB cannot do cheaply: idle expiry and user listings by time.
chatlog's readers filter expired sessions by the meta item's ``expires_at``;
LangChain's reader sees them until :meth:`DynamoDbTarget.sweep` deletes them.
Numbers inside messages come back as DynamoDB numbers (a float with no
fraction reads back as an integer), so messages are compared in a canonical
JSON form (:meth:`DynamoDbTarget.stored_form`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chatlog.dynamodb_items import (
    advance_positions,
    batch_write,
    get_many,
    get_one,
    query,
)
from chatlog.errors import ItemTooLargeError, TargetError
from chatlog.projector.changes import Change, Refusal, RefusalReason
from chatlog.projector.checkpoint_projection import CheckpointApplyResult, CheckpointRecord
from chatlog.projector.protocol import OP_APPEND, OP_DELETE_USER
from chatlog.projector.redis_projection import ApplyResult
from chatlog.projector.targets.checkpoint_fold import ThreadState
from chatlog.projector.targets.session_fold import (
    SessionOutcome,
    Verdicts,
    expires_at,
    fold_batch,
    session_from,
    state_json,
    stored_verdicts,
)
from chatlog.projector.verify import ExpectedSession
from chatlog.target_layout import (
    DYNAMODB_HISTORY,
    DYNAMODB_KEY,
    DYNAMODB_META,
    DYNAMODB_POSITIONS,
    dynamodb_meta_table,
    dynamodb_session_of,
    dynamodb_session_pk,
    dynamodb_user_pk,
    from_dynamodb_value,
    to_dynamodb_value,
)

try:
    import boto3
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
    from botocore.exceptions import BotoCoreError, ClientError

    from chatlog.projector.targets.dynamodb_checkpoints import DynamoDbCheckpointStore
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise TargetError("the DynamoDB target needs boto3: pip install 'chatlog[dynamodb]'") from exc

#: The largest ``History`` (sum of the messages' JSON bytes) chatlog writes:
#: DynamoDB's 400 KB item limit less room for the key and attribute overhead.
HISTORY_LIMIT_BYTES = 380_000
KEY = DYNAMODB_KEY
HISTORY = DYNAMODB_HISTORY
#: Session transactions in flight at once unless the URL says ``?writers=N`` (at
#: most 10, boto3's connection pool). One by default: moto's server answers
#: concurrent TransactWriteItems with HTTP 500s; DynamoDB itself takes them.
WRITERS = 1
#: Index rows a session's transaction carries at most (100 items less its two).
_TRANSACTION_INDEX_ROWS = 98
_serialize = TypeSerializer().serialize
_deserialize = TypeDeserializer().deserialize


def canonical(text: str) -> str:
    """A stored message's canonical JSON: keys sorted, integral numbers as integers."""
    return json.dumps(
        from_dynamodb_value(to_dynamodb_value(json.loads(text))),
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )


def _message_attribute(text: str) -> dict[str, Any]:
    return _serialize(to_dynamodb_value(json.loads(text)))  # type: ignore[no-any-return]


def _message_text(attribute: dict[str, Any]) -> str:
    return json.dumps(
        from_dynamodb_value(_deserialize(attribute)),
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )


def _meta_key(session_id: str) -> dict[str, str]:
    return {"pk": dynamodb_session_pk(session_id), "sk": DYNAMODB_META}


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


class DynamoDbTarget:
    """The read model in DynamoDB, in LangChain's item layout.

    Args:
        url: ``dynamodb://TABLE?region=...&endpoint_url=...``.
        session_ttl_s: The deployment's idle TTL.
    """

    def __init__(self, url: str, *, session_ttl_s: float | None = None) -> None:
        parts = urlsplit(url)
        self.table = parts.netloc + parts.path.rstrip("/")
        if not self.table:
            raise TargetError(f"{url!r} names no table: write dynamodb://TABLE")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.url = f"dynamodb://{self.table}"
        self.meta_table = dynamodb_meta_table(self.table)
        self.default_ttl_ms = int(session_ttl_s * 1000) if session_ttl_s else 0
        try:
            writers = min(max(int(options.get("writers", WRITERS)), 1), 10)
        except ValueError as exc:
            raise TargetError(f"{url!r}: writers must be a number from 1 to 10") from exc
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="chatlog-dynamodb")
        try:
            self.client = boto3.client(
                "dynamodb",
                region_name=options.get("region"),
                endpoint_url=options.get("endpoint_url"),
            )
            self._ensure_tables()
            self.checkpoints = DynamoDbCheckpointStore(self.client, self.meta_table)
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(f"opening DynamoDB target {self.url} failed: {exc}") from exc

    def _ensure_tables(self) -> None:
        existing = set()
        for page in self.client.get_paginator("list_tables").paginate():
            existing.update(page["TableNames"])
        wanted = {
            self.table: [(KEY, "HASH")],
            self.meta_table: [("pk", "HASH"), ("sk", "RANGE")],
        }
        for name, schema in wanted.items():
            if name in existing:
                continue
            self.client.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": a, "KeyType": t} for a, t in schema],
                AttributeDefinitions=[
                    {"AttributeName": a, "AttributeType": "S"} for a, _ in schema
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        for name in wanted:
            self.client.get_waiter("table_exists").wait(TableName=name)

    # -- apply ---------------------------------------------------------------

    def apply(self, changes: Sequence[Change], *, advance: Mapping[int, int]) -> ApplyResult:
        """Apply ``changes`` with conditional writes per session, then ``advance``."""
        try:
            result = self._apply(changes)
            advance_positions(self.client, self.meta_table, DYNAMODB_POSITIONS, dict(advance))
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(
                f"applying a batch to {self.url} failed: {exc}; applying it again is safe"
            ) from exc
        return result

    def _apply(self, changes: Sequence[Change]) -> ApplyResult:
        if not changes:
            return ApplyResult()
        touched = sorted({c.session_id for c in changes if c.op != OP_DELETE_USER})
        loaded: dict[str, ExpectedSession] = {}
        versions: dict[str, int] = {}
        verdicts: dict[str, Verdicts] = {}
        index: dict[str, dict[str, int]] = {}
        metas = self._get(self.meta_table, [_meta_key(s) for s in touched])
        histories = self._get(self.table, [{KEY: s} for s in touched])
        for sid in touched:
            meta = metas.get((dynamodb_session_pk(sid), DYNAMODB_META))
            if meta is None:
                continue
            item = histories.get((sid,), {})
            messages = [_message_text(m) for m in item.get(HISTORY, {}).get("L", [])]
            loaded[sid] = session_from(meta["state"]["S"], messages)
            verdicts[sid] = stored_verdicts(meta["state"]["S"])
            versions[sid] = int(meta["version"]["N"])
            owner = meta["owner"]["S"]
            if owner:
                row = self._get_one(self.meta_table, {"pk": dynamodb_user_pk(owner), "sk": sid})
                if row is not None:
                    index.setdefault(owner, {})[sid] = int(row["last_ms"]["N"])
        for user in sorted({c.user_id for c in changes if c.op == OP_DELETE_USER and c.user_id}):
            for row in self._query(dynamodb_user_pk(user)):
                index.setdefault(user, {})[row["sk"]["S"]] = int(row["last_ms"]["N"])
        outcome = fold_batch(
            changes, loaded, index, default_ttl_ms=self.default_ttl_ms, admit=self._admit(),
            verdicts=verdicts,
        )
        index_ops, rest = self._index_ops(outcome.listed, outcome.unlisted, outcome.sessions)
        # Sessions are independent items: their transactions run side by side.
        writes = [
            self._pool.submit(
                self._write_session, sid, done, versions.get(sid), index_ops.get(sid, [])
            )
            for sid, done in outcome.sessions.items()
        ]
        for write in writes:
            write.result()
        self._batch_write(self.meta_table, rest)
        return outcome.result

    def apply_checkpoints(
        self, records: Sequence[CheckpointRecord], *, advance: Mapping[int, int]
    ) -> CheckpointApplyResult:
        """Apply checkpoint records (one conditional write per thread), then ``advance``."""
        try:
            return self.checkpoints.apply(records, advance=advance)
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(
                f"applying checkpoints to {self.url} failed: {exc}; applying them again is safe"
            ) from exc

    def checkpoint_positions(self) -> dict[int, int]:
        """The checkpoint topic's next offset to apply, per partition."""
        return dict(self._read(self.checkpoints.positions))

    def checkpoint_thread_ids(self) -> list[str]:
        """Every thread with a meta item (a scan of ``TABLE.chatlog``)."""
        return list(self._read(self.checkpoints.thread_ids))

    def checkpoint_state(self, thread_id: str) -> ThreadState | None:
        """The thread's stored meta and items, for verify."""
        state: ThreadState | None = self._read(lambda: self.checkpoints.state(thread_id))
        return state

    def _index_ops(
        self,
        listed: Mapping[tuple[str, str], int],
        unlisted: set[tuple[str, str]],
        written: Mapping[str, SessionOutcome],
    ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        """The user index edits: per written session (in its transaction), and the rest.

        A session's index rows go in its own transaction, so a reader that sees
        the session's offset also sees it listed (read-your-writes on
        ``ChatLog.sessions``). Rows of sessions this batch does not write (a
        ``UserDeleted`` unlisting them) follow as a batch write.
        """
        ops: dict[str, list[dict[str, Any]]] = {}
        rest: list[dict[str, Any]] = []
        edits = [(key, {"Put": {"TableName": self.meta_table, "Item": {
            "pk": {"S": dynamodb_user_pk(key[0])}, "sk": {"S": key[1]},
            "last_ms": {"N": str(at)},
        }}}) for key, at in listed.items()]
        edits += [(key, {"Delete": {"TableName": self.meta_table, "Key": {
            "pk": {"S": dynamodb_user_pk(key[0])}, "sk": {"S": key[1]},
        }}}) for key in sorted(unlisted - set(listed))]
        for (_user, sid), op in edits:
            in_transaction = ops.setdefault(sid, []) if sid in written else None
            # TransactWriteItems takes 100 items: the session's two, then index rows.
            if in_transaction is not None and len(in_transaction) < _TRANSACTION_INDEX_ROWS:
                in_transaction.append(op)
            elif "Put" in op:
                rest.append({"PutRequest": {"Item": op["Put"]["Item"]}})
            else:
                rest.append({"DeleteRequest": {"Key": op["Delete"]["Key"]}})
        return ops, rest

    def replace_session(
        self, session_id: str, changes: Sequence[Change], *, through: int
    ) -> bool:
        """Rebuild ``session_id`` from ``changes`` (see the protocol).

        The session is folded from nothing and written with one transaction
        conditional on the meta item's version as read here, so a live
        projector's write in between makes this return ``False``, not lose it.
        """
        own = [c for c in changes if c.session_id == session_id and c.op != OP_DELETE_USER]
        try:
            meta = self._get_one(self.meta_table, _meta_key(session_id))
            version = None if meta is None else int(meta["version"]["N"])
            listed_before: set[tuple[str, str]] = set()
            if meta is not None:
                if session_from(meta["state"]["S"], []).offset > through:
                    return False
                if meta["owner"]["S"]:
                    listed_before.add((meta["owner"]["S"], session_id))
            outcome = fold_batch(
                own, {}, {}, default_ttl_ms=self.default_ttl_ms, admit=self._admit()
            )
            done = outcome.sessions.get(session_id)
            # The former owner's row goes unless the rebuilt session lists it again.
            index_ops, rest = self._index_ops(
                outcome.listed, listed_before - set(outcome.listed), outcome.sessions
            )
            try:
                if done is not None:
                    self._write_session(session_id, done, version, index_ops.get(session_id, []))
                elif version is not None:
                    self._delete_session(session_id, version)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                return False  # the live projector wrote the session meanwhile
            self._batch_write(self.meta_table, rest)
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(f"rebuilding session {session_id!r} in {self.url} failed: {exc}") \
                from exc
        return True

    def _delete_session(self, session_id: str, version: int) -> None:
        self.client.transact_write_items(TransactItems=[
            {"Delete": {"TableName": self.table, "Key": {KEY: {"S": session_id}}}},
            {"Delete": {
                "TableName": self.meta_table,
                "Key": {k: {"S": v} for k, v in _meta_key(session_id).items()},
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(version)}},
            }},
        ])

    def _admit(self) -> Callable[[ExpectedSession | None, Change], Refusal | None]:
        sizes: dict[str, tuple[int, int]] = {}  # session -> (messages counted, bytes)

        def admit(session: ExpectedSession | None, change: Change) -> Refusal | None:
            if change.op != OP_APPEND or session is None:
                return None
            counted, size = sizes.get(change.session_id, (0, 0))
            messages = session.messages
            if counted > len(messages):  # cleared or restarted since last counted
                counted, size = 0, 0
            size += sum(len(m.encode("utf-8")) for m in messages[counted:])
            sizes[change.session_id] = (len(messages), size)
            if size + len(change.arg) <= HISTORY_LIMIT_BYTES:
                return None
            error = ItemTooLargeError(
                f"session {change.session_id!r} would pass DynamoDB's 400 KB item limit "
                f"({size + len(change.arg)} bytes of messages); the message at offset "
                f"{change.offset} is not stored. Clear or delete the session."
            )
            return Refusal(RefusalReason.SESSION_FAILED, f"{type(error).__name__}: {error}")

        return admit

    def _write_session(
        self,
        sid: str,
        done: SessionOutcome,
        version: int | None,
        index_ops: Sequence[dict[str, Any]] = (),
    ) -> None:
        session = done.session
        messages = session.messages
        meta = {
            "pk": {"S": dynamodb_session_pk(sid)},
            "sk": {"S": DYNAMODB_META},
            "state": {"S": state_json(session, done.verdicts)},
            "count": {"N": str(len(messages))},
            "owner": {"S": session.owner},
            "expires_at": {"N": str(expires_at(session, self.default_ttl_ms))},
            "version": {"N": str((version or 0) + 1)},
        }
        if version is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(version)}},
            }
        data: dict[str, Any]
        if messages:
            history = {"L": [_message_attribute(m) for m in messages]}
            data = {"Put": {"TableName": self.table, "Item": {KEY: {"S": sid}, HISTORY: history}}}
        else:
            data = {"Delete": {"TableName": self.table, "Key": {KEY: {"S": sid}}}}
        try:
            self.client.transact_write_items(TransactItems=[
                data, {"Put": {"TableName": self.meta_table, "Item": meta, **condition}},
                *index_ops,
            ])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            # botocore retries a call whose answer it lost; if the first attempt
            # went through, the retry finds the version it wrote itself.
            stored = self._get_one(self.meta_table, _meta_key(sid))
            if stored is None or stored.get("version") != meta["version"] \
                    or stored.get("state") != meta["state"]:
                raise

    # -- low-level -----------------------------------------------------------

    def _get(
        self, table: str, keys: list[dict[str, str]]
    ) -> dict[tuple[str, ...], dict[str, Any]]:
        return get_many(self.client, table, keys)

    def _get_one(self, table: str, key: dict[str, str]) -> dict[str, Any] | None:
        return get_one(self.client, table, key)

    def _query(self, pk: str) -> Iterator[dict[str, Any]]:
        return query(self.client, self.meta_table, pk)

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        batch_write(self.client, table, requests)

    # -- reads ---------------------------------------------------------------

    def positions(self) -> dict[int, int]:
        """Every recorded partition's next offset to apply."""
        rows = self._read(lambda: list(self._query(DYNAMODB_POSITIONS)))
        return {int(r["sk"]["S"]): int(r["next_offset"]["N"]) for r in rows}

    def read_session(self, session_id: str, *, now_ms: int | None = None) -> list[str]:
        """The session's messages in canonical JSON; ``[]`` when expired or absent."""
        meta = self._read(
            lambda: self._get_one(self.meta_table, _meta_key(session_id))
        )
        if meta is not None:
            expiry = int(meta["expires_at"]["N"])
            if expiry and expiry <= _now(now_ms):
                return []
        item = self._read(lambda: self._get_one(self.table, {KEY: session_id}))
        if item is None:
            return []
        return [_message_text(m) for m in item.get(HISTORY, {}).get("L", [])]

    def stored_form(self, text: str) -> str:
        """The form :meth:`read_session` returns a message the log stores as ``text``."""
        return canonical(text)

    def user_sessions(self, user_id: str, *, now_ms: int | None = None) -> dict[str, int]:
        """The user's sessions that are not expired: session id -> last activity."""
        now = _now(now_ms)
        rows = self._read(lambda: list(self._query(dynamodb_user_pk(user_id))))
        listed = {r["sk"]["S"]: int(r["last_ms"]["N"]) for r in rows}
        metas = self._read(lambda: self._get(
            self.meta_table, [_meta_key(s) for s in sorted(listed)]
        ))
        found = {}
        for sid, at in listed.items():
            meta = metas.get((dynamodb_session_pk(sid), DYNAMODB_META))
            expiry = int(meta["expires_at"]["N"]) if meta else 0
            if not expiry or expiry > now:
                found[sid] = at
        return found

    def scan_sessions(self) -> Iterator[str]:
        """Every session with a meta item or a ``History`` item."""
        found: set[str] = set()

        def scan() -> None:
            for page in self.client.get_paginator("scan").paginate(
                TableName=self.table, ProjectionExpression=KEY
            ):
                found.update(item[KEY]["S"] for item in page["Items"])
            for page in self.client.get_paginator("scan").paginate(
                TableName=self.meta_table, ProjectionExpression="pk, sk"
            ):
                sessions = (dynamodb_session_of(item["pk"]["S"]) for item in page["Items"])
                found.update(s for s in sessions if s is not None)

        self._read(scan)
        return iter(sorted(found))

    def sweep(self, *, now_ms: int | None = None) -> int:
        """Delete the ``History`` items of idle-expired sessions; return how many."""
        now = _now(now_ms)
        expired: list[str] = []

        def scan() -> None:
            for page in self.client.get_paginator("scan").paginate(
                TableName=self.meta_table,
                FilterExpression="sk = :m AND expires_at > :z AND expires_at <= :now "
                "AND #count > :z",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues={
                    ":m": {"S": DYNAMODB_META}, ":z": {"N": "0"}, ":now": {"N": str(now)},
                },
            ):
                expired.extend(dynamodb_session_of(item["pk"]["S"]) or "" for item in page["Items"])
            self._batch_write(self.table, [
                {"DeleteRequest": {"Key": {KEY: {"S": sid}}}} for sid in expired
            ])
            for sid in expired:
                # The count follows the item, as in SQL (the version stays: no state changed).
                self.client.update_item(
                    TableName=self.meta_table,
                    Key={k: {"S": v} for k, v in _meta_key(sid).items()},
                    UpdateExpression="SET #count = :z",
                    ExpressionAttributeNames={"#count": "count"},
                    ExpressionAttributeValues={":z": {"N": "0"}},
                )

        self._read(scan)
        return len(expired)

    def drop(self) -> None:
        """Delete both tables."""
        def delete() -> None:
            for name in (self.table, self.meta_table):
                self.client.delete_table(TableName=name)
                self.client.get_waiter("table_not_exists").wait(TableName=name)

        self._read(delete)

    def close(self) -> None:
        """Close the client's connections."""
        self._pool.shutdown()
        self.client.close()

    def _read(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (BotoCoreError, ClientError) as exc:
            raise TargetError(f"DynamoDB target {self.url} failed: {exc}") from exc
