"""The LangGraph saver's read model in DynamoDB: items in chatlog's own table (``TABLE.chatlog``).

Per thread, under partition key ``t#<thread>``: the ``meta`` item (position,
owner, TTL, expiry, namespaces, index score and a ``version`` every write is
conditional on), and one item per checkpoint (``c#<ns NUL id>``: stored frame,
version list, run id), channel value (``b#…``), pending write (``w#…``) and
chunk part (``k#…``). Beside them: ``ut#<user>`` / ``<thread>`` (the owner's
thread index), ``r#<run>`` / ``<thread NUL ns NUL id>`` (``delete_for_runs``)
and ``checkpoint-positions`` / ``<partition>``. LangChain's table is not touched.

Each thread of a batch is folded with the Lua script's rules
(:func:`~chatlog.projector.targets.checkpoint_fold.fold_thread`) and written
with one ``TransactWriteItems`` whose meta put is conditional on the version
read, so data, position and index move together. A thread whose batch needs
more than one transaction holds (100 items, about 4 MB) is written in an
order that stays safe to re-apply (new values first, checkpoints dropped
last) with the conditional meta put as the last write: a crash in between
leaves the position behind, and the redelivered batch folds again to the
same items. A value over DynamoDB's 400 KB item limit is refused
(``ItemTooLargeError``'s text, dead-lettered); the thread keeps the rest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from chatlog.dynamodb_items import (
    advance_positions,
    batch_write,
    get_many,
    query,
    scan_keys,
)
from chatlog.errors import ItemTooLargeError
from chatlog.projector.checkpoint_projection import (
    CheckpointApplyResult,
    CheckpointRecord,
    thread_arguments,
)
from chatlog.projector.targets.checkpoint_fold import (
    StoredRefs,
    ThreadOutcome,
    ThreadRow,
    ThreadState,
    fold_into,
)
from chatlog.schemas.checkpoint_codec import CheckpointCodec
from chatlog.schemas.checkpoint_stored import SEPARATOR
from chatlog.target_layout import (
    DYNAMODB_BLOB,
    DYNAMODB_CHECKPOINT,
    DYNAMODB_CHECKPOINT_POSITIONS,
    DYNAMODB_CHUNK,
    DYNAMODB_META,
    DYNAMODB_WRITE,
    dynamodb_run_pk,
    dynamodb_thread_pk,
    dynamodb_user_threads_pk,
)

#: The largest value chatlog writes in one item (DynamoDB's 400 KB less key room).
VALUE_LIMIT_BYTES = 390_000
#: One transaction's items (DynamoDB: 100) and bytes (4 MB), with room for the meta item.
_TRANSACTION_ITEMS = 99
_TRANSACTION_BYTES = 3_500_000
_PREFIXES = {
    "checkpoints": DYNAMODB_CHECKPOINT,
    "blobs": DYNAMODB_BLOB,
    "writes": DYNAMODB_WRITE,
    "chunks": DYNAMODB_CHUNK,
}
#: Write phases when a thread takes several calls: re-applying from any cut is safe.
_PHASES = ("put:blobs", "delete:blobs", "delete:writes", "delete:chunks", "put:writes",
           "put:chunks", "put:runs", "put:checkpoints", "delete:checkpoints", "delete:runs",
           "index")


def thread_row(meta: dict[str, Any] | None) -> tuple[ThreadRow, int | None]:
    """A thread's meta item as the fold's row, and the version it was read at."""
    if meta is None:
        return ThreadRow(), None
    return ThreadRow(
        partition=int(meta["partition"]["N"]) if "partition" in meta else None,
        offset=int(meta["offset"]["N"]),
        owner=meta["owner"]["S"] if "owner" in meta else None,
        ttl_ms=int(meta["ttl_ms"]["N"]),
        expiry=int(meta["expiry"]["N"]),
        namespaces=json.loads(meta["namespaces"]["S"]),
        listed_ms=int(meta["listed_ms"]["N"]) if "listed_ms" in meta else None,
    ), int(meta["version"]["N"])


def _too_large(args: list[Any]) -> bool:
    return any(isinstance(a, bytes) and len(a) > VALUE_LIMIT_BYTES for a in args)


class DynamoDbCheckpointStore:
    """Applies checkpoint records to chatlog's DynamoDB table, one conditional write per thread.

    Args:
        client: The target's boto3 DynamoDB client.
        table: chatlog's own table (``TABLE.chatlog``, key ``pk``/``sk``).
    """

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table
        self.codec = CheckpointCodec()

    def positions(self) -> dict[int, int]:
        """The checkpoint topic's next offset to apply, per partition."""
        rows = query(self.client, self.table, DYNAMODB_CHECKPOINT_POSITIONS)
        return {int(r["sk"]["S"]): int(r["next_offset"]["N"]) for r in rows}

    def thread_ids(self) -> list[str]:
        """Every thread with a meta item (a scan)."""
        return scan_keys(self.client, self.table, sk=DYNAMODB_META,
                         pk_prefix=dynamodb_thread_pk(""))

    def state(self, thread_id: str) -> ThreadState | None:
        """The thread's meta item and every stored item with its value."""
        items = list(query(self.client, self.table, dynamodb_thread_pk(thread_id)))
        meta = next((i for i in items if i["sk"]["S"] == DYNAMODB_META), None)
        if meta is None:
            return None
        state = ThreadState(thread_row(meta)[0])
        for item in items:
            sk = item["sk"]["S"]
            if sk == DYNAMODB_META:
                continue
            kind = self._kind(sk)
            name = sk[len(_PREFIXES[kind]) :]
            if kind == "checkpoints":
                run = item["run_id"]["S"] if "run_id" in item else None
                state.items[kind][name] = (bytes(item["stored"]["B"]), item["versions"]["S"], run)
            else:
                state.items[kind][name] = bytes(item["value"]["B"])
        return state

    def apply(
        self, records: Sequence[CheckpointRecord], *, advance: Mapping[int, int]
    ) -> CheckpointApplyResult:
        """Apply ``records`` thread by thread (conditional writes), then ``advance``.

        Raises botocore's errors unchanged (the target wraps them): applying
        the same records again is safe.
        """
        result = CheckpointApplyResult()
        threads = thread_arguments(records, self.codec, self._stored_chunks, result)
        metas = get_many(self.client, self.table, [
            {"pk": dynamodb_thread_pk(t), "sk": DYNAMODB_META} for t in sorted(threads)
        ])
        for thread_id, items in threads.items():
            fits = []
            for record, args in items:
                if _too_large(args):
                    error = ItemTooLargeError(
                        f"a value of thread {thread_id!r} at offset {record.offset} passes "
                        f"DynamoDB's 400 KB item limit; the event is not stored"
                    )
                    result.failed.append((record, f"{type(error).__name__}: {error}"))
                else:
                    fits.append((record, args))
            if not fits:
                continue
            row, version = thread_row(metas.get((dynamodb_thread_pk(thread_id), DYNAMODB_META)))
            listed_before = (row.owner, row.listed_ms)
            stored, refs = self._load(thread_id)
            outcome = fold_into(result, thread_id, fits, row, refs)
            if outcome is not None and outcome.changed:
                self._write(thread_id, outcome, version, stored, refs, listed_before)
        advance_positions(self.client, self.table, DYNAMODB_CHECKPOINT_POSITIONS, dict(advance))
        return result

    def _stored_chunks(self, thread_id: str, names: list[str]) -> dict[str, bytes]:
        pk = dynamodb_thread_pk(thread_id)
        found = get_many(self.client, self.table,
                         [{"pk": pk, "sk": DYNAMODB_CHUNK + name} for name in names])
        return {sk[len(DYNAMODB_CHUNK):]: bytes(item["value"]["B"])
                for (_, sk), item in found.items()}

    def _load(self, thread_id: str) -> tuple[list[str], StoredRefs]:
        """Every stored sort key of the thread, and what the fold reads (no values)."""
        stored: list[str] = []
        refs = StoredRefs()
        for item in query(self.client, self.table, dynamodb_thread_pk(thread_id),
                          ProjectionExpression="sk, versions, run_id"):
            sk = item["sk"]["S"]
            stored.append(sk)
            if sk.startswith(DYNAMODB_CHECKPOINT):
                run = item["run_id"]["S"] if "run_id" in item else None
                refs.checkpoints[sk[len(DYNAMODB_CHECKPOINT):]] = (item["versions"]["S"], run)
            elif sk.startswith(DYNAMODB_WRITE):
                refs.writes.add(sk[len(DYNAMODB_WRITE):])
        return stored, refs

    def _write(
        self, thread_id: str, outcome: ThreadOutcome, version: int | None,
        stored: list[str], refs: StoredRefs, listed_before: tuple[str | None, int | None],
    ) -> None:
        pk = dynamodb_thread_pk(thread_id)
        ops: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

        def delete(phase: str, key_pk: str, sk: str) -> None:
            ops[(key_pk, sk)] = (phase, {"Delete": {"TableName": self.table, "Key": {
                "pk": {"S": key_pk}, "sk": {"S": sk}}}})

        def put(phase: str, item: dict[str, Any]) -> None:
            ops[(item["pk"]["S"], item["sk"]["S"])] = (
                phase, {"Put": {"TableName": self.table, "Item": item}}
            )

        dropped_runs = dict(refs.checkpoints) if outcome.cleared else {}
        if outcome.cleared:
            for sk in stored:
                if sk != DYNAMODB_META:
                    delete(f"delete:{self._kind(sk)}", pk, sk)
        groups: list[tuple[str, Mapping[str, Any]]] = [
            ("blobs", outcome.blobs), ("writes", outcome.writes),
            ("chunks", outcome.chunks), ("checkpoints", outcome.checkpoints),
        ]
        for kind, changed in groups:
            prefix = _PREFIXES[kind]
            for name, value in changed.items():
                if value is None:
                    delete(f"delete:{kind}", pk, prefix + name)
                    if kind == "checkpoints" and name in refs.checkpoints:
                        dropped_runs[name] = refs.checkpoints[name]
                    continue
                item: dict[str, Any] = {"pk": {"S": pk}, "sk": {"S": prefix + name}}
                if kind == "checkpoints":
                    frame, versions, run_id = value
                    item.update(stored={"B": frame}, versions={"S": versions})
                    if run_id:
                        item["run_id"] = {"S": run_id}
                        put("put:runs", {"pk": {"S": dynamodb_run_pk(run_id)},
                                         "sk": {"S": thread_id + SEPARATOR + name}})
                else:
                    item["value"] = {"B": value}
                put(f"put:{kind}", item)
        for name, (_, run_id) in dropped_runs.items():
            if run_id and (dynamodb_run_pk(run_id), thread_id + SEPARATOR + name) not in ops:
                delete("delete:runs", dynamodb_run_pk(run_id), thread_id + SEPARATOR + name)
        row = outcome.row
        owner_before, listed = listed_before
        if owner_before and listed is not None and row.listed_ms is None:
            delete("index", dynamodb_user_threads_pk(owner_before), thread_id)
        if row.owner and row.listed_ms is not None and row.listed_ms != listed:
            put("index", {"pk": {"S": dynamodb_user_threads_pk(row.owner)},
                          "sk": {"S": thread_id}, "listed_ms": {"N": str(row.listed_ms)}})
        meta = self._meta_put(pk, row, version)
        ordered = sorted(ops.values(), key=lambda op: _PHASES.index(op[0]))
        size = sum(len(str(op)) for _, op in ordered)
        if len(ordered) <= _TRANSACTION_ITEMS and size <= _TRANSACTION_BYTES:
            self.client.transact_write_items(TransactItems=[*(op for _, op in ordered), meta])
            return
        for phase in _PHASES:
            batch_write(self.client, self.table, [
                {"PutRequest": {"Item": op["Put"]["Item"]}} if "Put" in op
                else {"DeleteRequest": {"Key": op["Delete"]["Key"]}}
                for name, op in ordered if name == phase
            ])
        self.client.transact_write_items(TransactItems=[meta])

    @staticmethod
    def _kind(sk: str) -> str:
        return next(kind for kind, prefix in _PREFIXES.items() if sk.startswith(prefix))

    def _meta_put(self, pk: str, row: ThreadRow, version: int | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": {"S": pk}, "sk": {"S": DYNAMODB_META},
            "offset": {"N": str(row.offset)}, "ttl_ms": {"N": str(row.ttl_ms)},
            "expiry": {"N": str(row.expiry)}, "namespaces": {"S": row.to_json()},
            "version": {"N": str((version or 0) + 1)},
        }
        if row.partition is not None:
            item["partition"] = {"N": str(row.partition)}
        if row.owner:
            item["owner"] = {"S": row.owner}
        if row.listed_ms is not None:
            item["listed_ms"] = {"N": str(row.listed_ms)}
        if version is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(version)}},
            }
        return {"Put": {"TableName": self.table, "Item": item, **condition}}
