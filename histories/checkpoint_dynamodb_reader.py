"""The LangGraph saver reads a DynamoDB read model (``CHATLOG_READ_MODEL=dynamodb://TABLE``).

The items of ``TABLE.chatlog`` that the target projector writes (layout:
:mod:`chatlog.target_layout`, ``t#<thread>`` / ``meta``, ``c#…``, ``b#…``,
``w#…``; ``ut#<user>``; ``r#<run>``), read strongly consistent: the thread's
meta item (position) first, then its checkpoints newest first by a query on
the sort key, blobs by ``BatchGetItem`` and writes by a query per checkpoint.
Listing every thread (``list(None)``) is a table scan.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any, TypeVar

from chatlog.dynamodb_items import get_many, get_one, query, scan_keys
from chatlog.errors import TargetError
from chatlog.histories.checkpoint_target_reader import (
    StoredCheckpointRow,
    StoredThread,
    TargetCheckpointReader,
    is_live,
)
from chatlog.histories.target_reader import dynamodb_client
from chatlog.schemas.checkpoint_stored import SEPARATOR
from chatlog.target_layout import (
    DYNAMODB_BLOB,
    DYNAMODB_CHECKPOINT,
    DYNAMODB_META,
    DYNAMODB_WRITE,
    dynamodb_meta_table,
    dynamodb_run_pk,
    dynamodb_thread_pk,
    dynamodb_user_threads_pk,
)

T = TypeVar("T")
_THREAD_PREFIX = dynamodb_thread_pk("")


def _row(item: dict[str, Any]) -> StoredCheckpointRow:
    member = item["sk"]["S"][len(DYNAMODB_CHECKPOINT) :]
    return StoredCheckpointRow(member.encode(), bytes(item["stored"]["B"]), item["versions"]["S"])


class DynamoDbCheckpointReader(TargetCheckpointReader):
    """Reads LangGraph threads from chatlog's DynamoDB table (``dynamodb://TABLE?…``)."""

    def __init__(self, url: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.client, table = dynamodb_client(url)
        self.table = dynamodb_meta_table(table)
        self._errors = (BotoCoreError, ClientError)

    def _read(self, what: str, read: Callable[[Any], T]) -> T:
        try:
            return read(None)
        except self._errors as exc:
            raise TargetError(f"{what} failed: {exc}") from exc

    def _meta(self, thread_id: str) -> dict[str, Any] | None:
        return get_one(self.client, self.table,
                       {"pk": dynamodb_thread_pk(thread_id), "sk": DYNAMODB_META})

    def _thread(self, conn: Any, thread_id: str) -> StoredThread | None:
        meta = self._meta(thread_id)
        if meta is None:
            return None
        return StoredThread(
            int(meta["partition"]["N"]) if "partition" in meta else None,
            int(meta["offset"]["N"]),
            meta["owner"]["S"] if "owner" in meta else None,
            int(meta["expiry"]["N"]),
            meta["namespaces"]["S"],
        )

    def _checkpoints(
        self, conn: Any, thread_id: str, ns: str, checkpoint_id: str | None,
        before: str | None, limit: int | None,
    ) -> list[StoredCheckpointRow]:
        pk = dynamodb_thread_pk(thread_id)
        prefix = DYNAMODB_CHECKPOINT + ns + SEPARATOR
        if checkpoint_id is not None:
            if before is not None and not checkpoint_id < before:
                return []
            item = get_one(self.client, self.table, {"pk": pk, "sk": prefix + checkpoint_id})
            return [] if item is None else [_row(item)]
        if before is None:
            condition, values = "begins_with(sk, :lo)", {":lo": {"S": prefix}}
        else:
            # Every key between the prefix and prefix + before starts with the prefix.
            condition = "sk BETWEEN :lo AND :hi"
            values = {":lo": {"S": prefix}, ":hi": {"S": prefix + before}}
        options: dict[str, Any] = {"ScanIndexForward": False}
        if limit is not None:
            options["Limit"] = limit + 1
        items = (
            item for item in query(self.client, self.table, pk, sk_condition=condition,
                                   values=values, **options)
            if before is None or item["sk"]["S"] != prefix + before
        )
        return [_row(item) for item in islice(items, limit)]

    def _blobs(self, conn: Any, thread_id: str, fields: list[str]) -> dict[str, bytes]:
        pk = dynamodb_thread_pk(thread_id)
        found = get_many(self.client, self.table,
                         [{"pk": pk, "sk": DYNAMODB_BLOB + name} for name in fields])
        return {sk[len(DYNAMODB_BLOB) :]: bytes(item["value"]["B"])
                for (_, sk), item in found.items()}

    def _writes(self, conn: Any, thread_id: str, members: list[bytes]
                ) -> dict[bytes, list[bytes]]:
        pk = dynamodb_thread_pk(thread_id)
        found: dict[bytes, list[bytes]] = {}
        for member in members:
            prefix = DYNAMODB_WRITE + member.decode() + SEPARATOR
            values = [bytes(item["value"]["B"]) for item in query(
                self.client, self.table, pk, sk_condition="begins_with(sk, :p)",
                values={":p": {"S": prefix}},
            )]
            if values:
                found[member] = values
        return found

    def _metas(self, threads: list[str]) -> dict[str, dict[str, Any]]:
        found = get_many(self.client, self.table, [
            {"pk": dynamodb_thread_pk(t), "sk": DYNAMODB_META} for t in threads
        ])
        return {pk[len(_THREAD_PREFIX) :]: item for (pk, _), item in found.items()}

    def _positions(self, conn: Any, threads: list[str]) -> dict[str, tuple[int | None, int]]:
        metas = self._metas(threads)
        positions: dict[str, tuple[int | None, int]] = {}
        for thread in threads:
            meta = metas.get(thread)
            if meta is None:
                positions[thread] = (None, -1)
            else:
                part = int(meta["partition"]["N"]) if "partition" in meta else None
                positions[thread] = (part, int(meta["offset"]["N"]))
        return positions

    def _listed(self, conn: Any, user_id: str) -> list[tuple[str, int]]:
        rows = list(query(self.client, self.table, dynamodb_user_threads_pk(user_id)))
        metas = self._metas([row["sk"]["S"] for row in rows])
        listed = []
        for row in rows:
            thread = row["sk"]["S"]
            meta = metas.get(thread)
            # The meta item decides: the index item of a deleted thread may lag a crash.
            if meta is None or meta.get("owner", {}).get("S") != user_id \
                    or "listed_ms" not in meta:
                continue
            if not is_live(int(meta["expiry"]["N"])):
                continue
            listed.append((thread, int(meta["listed_ms"]["N"])))
        return listed

    def _run_entries(self, conn: Any, run_id: str) -> list[str]:
        return [item["sk"]["S"] for item in query(self.client, self.table, dynamodb_run_pk(run_id))]

    def _thread_ids(self, conn: Any) -> list[str]:
        return scan_keys(self.client, self.table, sk=DYNAMODB_META, pk_prefix=_THREAD_PREFIX)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

