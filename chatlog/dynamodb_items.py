"""Reading and writing DynamoDB items in pages: shared by the DynamoDB target and its readers.

Plain functions over a boto3 DynamoDB client (the caller makes it and wraps
botocore's errors in its own), so neither side imports the other. Reads are
strongly consistent: a reader checks positions against what it reads next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: Keys per BatchGetItem and requests per BatchWriteItem (DynamoDB's limits).
BATCH_GET = 100
BATCH_WRITE = 25


def get_many(
    client: Any, table: str, keys: list[dict[str, str]]
) -> dict[tuple[str, ...], dict[str, Any]]:
    """The items of ``keys`` (string key attributes), by their key values in key order."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    names = list(keys[0]) if keys else []
    for start in range(0, len(keys), BATCH_GET):
        pending: dict[str, Any] = {table: {
            "Keys": [{k: {"S": v} for k, v in key.items()}
                     for key in keys[start : start + BATCH_GET]],
            "ConsistentRead": True,
        }}
        while pending:
            reply = client.batch_get_item(RequestItems=pending)
            for item in reply["Responses"].get(table, []):
                found[tuple(item[n]["S"] for n in names)] = item
            pending = reply.get("UnprocessedKeys") or {}
    return found


def get_one(client: Any, table: str, key: dict[str, str]) -> dict[str, Any] | None:
    """The item of ``key``, or ``None``."""
    reply = client.get_item(
        TableName=table, Key={k: {"S": v} for k, v in key.items()}, ConsistentRead=True
    )
    item: dict[str, Any] | None = reply.get("Item")
    return item


def query(
    client: Any, table: str, pk: str, *, sk_condition: str = "",
    values: dict[str, Any] | None = None, **options: Any,
) -> Iterator[dict[str, Any]]:
    """The items under partition key ``pk`` (``sk_condition`` e.g. ``begins_with(sk, :p)``)."""
    condition = "pk = :pk" + (f" AND {sk_condition}" if sk_condition else "")
    for page in client.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression=condition,
        ExpressionAttributeValues={":pk": {"S": pk}, **(values or {})},
        ConsistentRead=True,
        **options,
    ):
        yield from page["Items"]


def batch_write(client: Any, table: str, requests: list[dict[str, Any]]) -> None:
    """``PutRequest``/``DeleteRequest`` items, 25 a call, until none is left unprocessed."""
    for start in range(0, len(requests), BATCH_WRITE):
        pending: dict[str, Any] = {table: requests[start : start + BATCH_WRITE]}
        while pending:
            reply = client.batch_write_item(RequestItems=pending)
            pending = reply.get("UnprocessedItems") or {}


def advance_positions(client: Any, table: str, pk: str, advance: dict[int, int]) -> None:
    """Record ``advance`` (partition -> next offset) under ``pk``, each only forward.

    One conditional update per partition; a position already at or past its
    offset stays (the condition fails, which is not an error).
    """
    for partition, offset in advance.items():
        # A failed condition: already recorded at or past this offset, which stays.
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.update_item(
                TableName=table,
                Key={"pk": {"S": pk}, "sk": {"S": str(partition)}},
                UpdateExpression="SET next_offset = :o",
                ConditionExpression="attribute_not_exists(next_offset) OR next_offset < :o",
                ExpressionAttributeValues={":o": {"N": str(offset)}},
            )


def scan_keys(client: Any, table: str, *, sk: str, pk_prefix: str) -> list[str]:
    """The partition keys (less ``pk_prefix``) of every item with sort key ``sk`` (a scan)."""
    found: list[str] = []
    for page in client.get_paginator("scan").paginate(
        TableName=table,
        ProjectionExpression="pk",
        FilterExpression="sk = :s AND begins_with(pk, :p)",
        ExpressionAttributeValues={":s": {"S": sk}, ":p": {"S": pk_prefix}},
        ConsistentRead=True,
    ):
        found += (item["pk"]["S"][len(pk_prefix) :] for item in page["Items"])
    return found
