"""A target rebuilt from the checkpoint log holds exactly the checkpoints Redis holds.

The saver writes through Redis (the Lua apply script, a running projector):
LangGraph's whole conformance workload (puts, writes, deletes, prunes, copies,
deletes by run) plus an owned thread with a TTL and a ``DeltaChannel``. Then
``chatlog replay rebuild --target`` replays the log into SQLite, PostgreSQL
or DynamoDB (the Python fold), and every thread reads the same through both readers:
position, owner, checkpoints with their values and pending writes, the
delta-channel walk and the user's thread index. A differential test of the
fold against the script, on the real log. ``replay verify --target`` then
finds every thread identical, and the one whose channel value is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from langgraph.checkpoint.conformance import checkpointer_test, validate

from chatlog import Settings
from chatlog.histories.checkpoint_read_model import ThreadSelection
from chatlog.histories.checkpoint_target_reader import CheckpointReading, open_checkpoint_reader
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.histories.target_reader import dynamodb_client, sql_engine
from chatlog.keys import ReadModelKeys
from chatlog.projector import Projector
from chatlog.projector.targets import open_target
from chatlog.projector.targets.rebuild import TargetReplayer
from chatlog.target_layout import (
    DYNAMODB_BLOB,
    DYNAMODB_CHUNK,
    DYNAMODB_WRITE,
    dynamodb_meta_table,
    sql_checkpoint_tables,
)
from tests.helpers import eventually, unique
from tests.integration.test_saver_maintenance import _config, _delta_graph

USER = "replay-user"


def _workload(settings: Settings) -> list[str]:
    """The conformance suite and an owned delta-channel thread; returns the owned thread."""

    @checkpointer_test(name="ChatLogCheckpointSaver (replay workload)")
    async def chatlog_saver() -> AsyncGenerator[ChatLogCheckpointSaver, None]:
        saver = ChatLogCheckpointSaver(settings)
        try:
            yield saver
        finally:
            await saver.aclose()

    report = asyncio.run(validate(chatlog_saver))
    assert all(result.passed for result in report.results.values())
    owned = [unique("owned"), unique("owned")]
    with ChatLogCheckpointSaver(settings) as saver:
        graph = _delta_graph(saver)
        for thread in owned:
            for _ in range(7):
                graph.invoke({"items": [], "count": 0},
                             _config(thread, user_id=USER, thread_ttl_s=3600))
        saver.prune([owned[0]])
        saver.delete_thread(owned[1])
    return owned


def _sorted(selection: ThreadSelection) -> ThreadSelection:
    entries = [e._replace(writes=sorted(e.writes)) for e in selection.entries]
    return selection._replace(entries=entries)


def _redis_fields(
    client: redis.Redis, settings: Settings, threads: list[str]
) -> set[tuple[str, ...]]:
    """Every stored blob, write and chunk field of ``threads`` in Redis (garbage included)."""
    found: set[tuple[str, ...]] = set()
    for thread in threads:
        keys = ReadModelKeys(settings.namespace).thread(thread)
        for kind, key in (("blobs", keys.blobs), ("writes", keys.writes), ("chunks", keys.chunks)):
            found |= {(kind, thread, name.decode()) for name in client.hkeys(key)}
    return found


def _target_fields(kind: str, url: str) -> set[tuple[str, ...]]:
    """Every stored blob, write and chunk field in the target (SQL tables or DynamoDB items)."""
    found: set[tuple[str, ...]] = set()
    if kind == "dynamodb":
        client, table = dynamodb_client(url)
        kinds = {DYNAMODB_BLOB: "blobs", DYNAMODB_WRITE: "writes", DYNAMODB_CHUNK: "chunks"}
        for page in client.get_paginator("scan").paginate(TableName=dynamodb_meta_table(table)):
            for item in page["Items"]:
                pk, sk = item["pk"]["S"], item["sk"]["S"]
                if pk.startswith("t#") and sk[:2] in kinds:
                    found.add((kinds[sk[:2]], pk[2:], sk[2:]))
        client.close()
        return found
    engine, table = sql_engine(url)[1:]
    names = sql_checkpoint_tables(table)
    with engine.connect() as conn:
        for name, table_name in (("blobs", names.blobs), ("writes", names.writes),
                                 ("chunks", names.chunks)):
            rows = conn.execute(sa.text(f"SELECT thread_id, field FROM {table_name}"))
            found |= {(name, thread, bytes(field).decode()) for thread, field in rows}
    engine.dispose()
    return found


def _drop_one_blob(kind: str, url: str, thread: str) -> None:
    """Lose one stored channel value of ``thread``, as a store might (verify must notice)."""
    if kind == "dynamodb":
        client, table = dynamodb_client(url)
        pk = f"t#{thread}"
        items = client.query(
            TableName=dynamodb_meta_table(table), KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": pk}}, ConsistentRead=True,
        )["Items"]
        sk = next(i["sk"]["S"] for i in items if i["sk"]["S"].startswith(DYNAMODB_BLOB))
        client.delete_item(TableName=dynamodb_meta_table(table),
                           Key={"pk": {"S": pk}, "sk": {"S": sk}})
        client.close()
        return
    engine, table = sql_engine(url)[1:]
    blobs = sql_checkpoint_tables(table).blobs
    with engine.begin() as conn:
        field = conn.execute(sa.text(f"SELECT field FROM {blobs} WHERE thread_id = :t LIMIT 1"),
                             {"t": thread}).scalar_one()
        conn.execute(sa.text(f"DELETE FROM {blobs} WHERE thread_id = :t AND field = :f"),
                     {"t": thread, "f": field})
    engine.dispose()


def _state(reader: CheckpointReading, threads: list[str], owned: list[str]) -> dict[str, Any]:
    state: dict[str, Any] = {
        thread: _sorted(reader.select(thread, checkpoint_ns=None)) for thread in threads
    }
    state["walk"] = [reader.lineage(t, "", None, ["items"]) for t in owned]
    state["index"] = reader.user_threads(USER, []).entries
    return state


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "dynamodb"])
def test_rebuilt_target_reads_the_same_checkpoints_as_redis(
    kind: str,
    settings_factory: Callable[..., Settings],
    projector_factory: Callable[..., Projector],
    target_url_factory: Callable[[str], str],
) -> None:
    """Every thread, walk and index entry read from the rebuilt target equals Redis'."""
    settings = settings_factory(partitions=2)
    projector_factory(settings)
    owned = _workload(settings)
    url = target_url_factory(kind)
    progress = TargetReplayer(settings, open_target(url, settings)).rebuild()
    assert progress.failed == 0
    assert progress.applied > 0
    again = TargetReplayer(settings, open_target(url, settings)).rebuild()
    assert (again.applied, again.failed) == (0, 0)
    with ChatLogCheckpointSaver(settings) as redis_saver:
        sql = open_checkpoint_reader(url)
        assert sql is not None
        try:
            threads = sql.threads()
            assert set(owned) <= set(threads)
            rebuilt = _state(sql, threads, owned)
            # Redis' projector is live: wait until it applied what the rebuild read.
            eventually(lambda: _state(redis_saver.reader, threads, owned) == rebuilt)
            assert redis_saver.reader.threads() == threads
        finally:
            sql.close()
    # Storage too, not only what reads show: no blob, write or chunk left behind on either side.
    client = redis.Redis.from_url(settings.redis_url)
    try:
        stored = _target_fields(kind, url)
        assert _redis_fields(client, settings, threads) == stored
    finally:
        client.close()
    assert any(kind == "blobs" for kind, *_ in stored)
    assert rebuilt[owned[1]].entries == []
    replayer = TargetReplayer(settings, open_target(url, settings))
    report = replayer.verify()
    assert (report.threads_checked, report.thread_differences, report.ok) == (
        len(threads), [], True)
    _drop_one_blob(kind, url, owned[0])
    report = replayer.verify()
    assert (report.thread_differences, report.ok) == ([owned[0]], False)
    assert [thread for thread, _ in rebuilt["index"]] == [owned[0]]
    print(f"\n{kind}: rebuilt {len(threads)} threads from {progress.applied} checkpoint events")
    assert len(threads) > 2
