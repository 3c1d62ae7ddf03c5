"""One read-model behaviour suite, run against a standalone Redis and a 3-primary Redis Cluster.

The module runs once per deployment (``read_model_url`` is parametrized in
conftest): the same appends, reads, listings, TTL, deletes, ownership,
rebuild/verify/drop and saver round trip must behave the same on both.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from chatlog import ChatLog, Settings
from chatlog.cli.devstack import EmbeddedRedisCluster
from chatlog.errors import SessionOwnershipError
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.histories.export import export_sessions
from chatlog.histories.importers import import_sessions
from chatlog.projector import Projector
from chatlog.projector.replay import Replayer
from chatlog.redis_clients import is_cluster, open_redis
from tests.helpers import eventually, unique, without_ids

SETTINGS_OVERRIDES = {"partitions": 4}


def test_the_client_factory_detects_the_deployment(
    read_model_url: str, redis_cluster: EmbeddedRedisCluster
) -> None:
    """CHATLOG_REDIS_MODE=auto opens a RedisCluster on a cluster node and redis.Redis otherwise."""
    client = open_redis(read_model_url)
    try:
        assert is_cluster(client) == (read_model_url == redis_cluster.url)
    finally:
        client.close()


def test_appends_read_back_in_order_sync_and_async(
    read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """Many sessions (spread over slots) read back their own messages in order, sync and async."""
    user = unique("u")
    histories = {unique("s"): read_model_chatlog.history(unique("s"), user) for _ in range(20)}
    for number, history in enumerate(histories.values()):
        history.add_messages([HumanMessage(f"q{number}"), AIMessage(f"a{number}")])
        history.add_messages([HumanMessage(f"again{number}")])
    for number, history in enumerate(histories.values()):
        expected = [HumanMessage(f"q{number}"), AIMessage(f"a{number}"),
                    HumanMessage(f"again{number}")]
        assert without_ids(history.messages) == expected
        assert without_ids(asyncio.run(history.aget_messages())) == expected
        assert without_ids(history.last(1)) == [HumanMessage(f"again{number}")]


def test_listing_shows_a_users_sessions_newest_first_with_counts(
    read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """The user index (in the user's slot) lists every session of the user, newest first."""
    alice, bob = unique("alice"), unique("bob")
    ids = [unique("a") for _ in range(12)]
    for number, session in enumerate(ids):
        read_model_chatlog.history(session, alice).add_messages(
            [HumanMessage(str(k)) for k in range(number % 3 + 1)]
        )
        time.sleep(0.002)  # distinct activity times
    read_model_chatlog.history(unique("b"), bob).add_messages([HumanMessage("theirs")])
    listed = read_model_chatlog.sessions(alice)
    assert [s.session_id for s in listed] == list(reversed(ids))
    assert [s.message_count for s in listed] == [n % 3 + 1 for n in reversed(range(12))]
    page = read_model_chatlog.sessions(alice, limit=5)
    assert [s.session_id for s in page] == list(reversed(ids))[:5]
    assert [s.session_id for s in asyncio.run(read_model_chatlog.asessions(alice))] == list(
        reversed(ids)
    )


def test_windows_read_one_slot_in_one_transaction(
    read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """history.read(limit=, before=) pages back through a session (MULTI on the session's slot)."""
    history = read_model_chatlog.history(unique("w"), unique("u"))
    history.add_messages([HumanMessage(str(n)) for n in range(7)])
    page = history.read(limit=3)
    assert [m.content for m in page.messages] == ["4", "5", "6"]
    older = history.read(limit=3, before=page.next_before)
    assert [m.content for m in older.messages] == ["1", "2", "3"]


def test_export_then_import_into_another_user_copies_every_message(
    read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """export_sessions reads a user's sessions; import_sessions writes them back for another."""
    alice, bob = unique("alice"), unique("bob")
    ids = [unique("e") for _ in range(4)]
    for session in ids:
        read_model_chatlog.history(session, alice).add_messages(
            [HumanMessage(session), AIMessage("ok")]
        )
    exported = list(export_sessions(read_model_chatlog, user_id=alice))
    assert sorted(e.session_id for e in exported) == sorted(ids)
    copies = [replace(e, session_id=f"{e.session_id}-copy") for e in exported]
    progress = import_sessions(read_model_chatlog, copies, user_id=bob)
    assert progress.sessions == len(ids)
    assert sorted(s.session_id for s in read_model_chatlog.sessions(bob)) == sorted(
        f"{s}-copy" for s in ids
    )
    for session in ids:
        assert without_ids(read_model_chatlog.history(f"{session}-copy", bob).messages) == [
            HumanMessage(session), AIMessage("ok")
        ]


def test_ownership_refuses_another_user(
    read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """The first writer owns the session; another user can neither read nor write it."""
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    mine = read_model_chatlog.history(session, alice)
    mine.add_messages([HumanMessage("secret")])
    assert without_ids(mine.messages) == [HumanMessage("secret")]
    with pytest.raises(SessionOwnershipError):
        read_model_chatlog.history(session, bob).messages
    with pytest.raises(SessionOwnershipError):
        read_model_chatlog.history(session, bob).add_messages([HumanMessage("mine now")])
    assert read_model_chatlog.sessions(bob) == []


def test_delete_session_and_delete_user_empty_reads_and_listings(
    read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """delete_session removes one session; delete_user removes every session of the user."""
    alice = unique("alice")
    kept, gone = unique("k"), unique("g")
    others = [unique("o") for _ in range(5)]
    for session in (kept, gone, *others):
        read_model_chatlog.history(session, alice).add_messages([HumanMessage(session)])
    read_model_chatlog.delete_session(gone, alice)
    eventually(lambda: gone not in {s.session_id for s in read_model_chatlog.sessions(alice)})
    assert read_model_chatlog.history(gone, alice).messages == []
    assert {s.session_id for s in read_model_chatlog.sessions(alice)} == {kept, *others}
    deleted = read_model_chatlog.delete_user(alice)
    assert set(deleted) == {kept, *others}
    eventually(lambda: read_model_chatlog.sessions(alice) == [])
    for session in (kept, *others):
        assert read_model_chatlog.history(session, alice).messages == []


def test_a_session_ttl_expires_the_session_and_its_listing(
    read_model_settings: Settings, read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """A 2 s per-session TTL expires every key of the idle session; other readers see nothing."""
    alice, session = unique("alice"), unique("t")
    history = read_model_chatlog.history(session, alice)
    history.set_ttl(2)
    history.add_messages([HumanMessage("short-lived")])
    assert without_ids(history.messages) == [HumanMessage("short-lived")]
    keys = read_model_chatlog.reader.keys
    client = open_redis(read_model_settings.redis_url)
    try:
        assert 0 < client.pttl(keys.meta(session)) <= 2000
        assert 0 < client.pttl(keys.messages(session)) <= 2000
        eventually(lambda: not client.exists(keys.messages(session), keys.meta(session)))
    finally:
        client.close()
    with ChatLog(read_model_settings) as other_process:
        assert other_process.history(session, alice).messages == []
        assert other_process.sessions(alice) == []


def test_rebuild_verify_and_drop_cover_every_node(
    read_model_settings: Settings, read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """A rebuild into a new namespace verifies clean; drop deletes exactly its keys everywhere."""
    user = unique("u")
    sessions = [unique("r") for _ in range(10)]
    for session in sessions:
        read_model_chatlog.history(session, user).add_messages(
            [HumanMessage("one"), AIMessage("two")]
        )
    namespace = f"{read_model_settings.namespace}-rebuilt"
    replayer = Replayer(read_model_settings)
    progress = replayer.rebuild(namespace)
    assert progress.failed == 0
    report = replayer.verify(namespace)
    assert report.ok, report.differences
    assert report.sessions_checked >= len(sessions)
    client = open_redis(read_model_settings.redis_url)
    try:
        keys = {
            k.decode() for k in client.scan_iter(match=f"{namespace}:*", count=1000)
        }
        assert {f"{namespace}:s:{{{s}}}:msgs" for s in sessions} <= keys
        dropped = replayer.drop(namespace)
        assert dropped == len(keys)
        assert not list(client.scan_iter(match=f"{namespace}:*", count=1000))
        assert without_ids(read_model_chatlog.history(sessions[0], user).messages) == [
            HumanMessage("one"), AIMessage("two")
        ]
    finally:
        client.close()


def test_verify_repair_rebuilds_a_tampered_session_in_place(
    read_model_settings: Settings, read_model_chatlog: ChatLog, read_model_projector: Projector
) -> None:
    """Verify --repair swaps one session's rebuilt keys in (one script on the session's slot)."""
    user, session = unique("u"), unique("v")
    history = read_model_chatlog.history(session, user)
    history.add_messages([HumanMessage("kept"), AIMessage("also kept")])
    assert len(history.messages) == 2
    keys = read_model_chatlog.reader.keys
    client = open_redis(read_model_settings.redis_url)
    try:
        client.lpop(keys.messages(session))
    finally:
        client.close()
    report = Replayer(read_model_settings).verify(repair=True)
    assert [d.session_id for d in report.differences] == [session]
    assert report.healthy
    assert without_ids(history.messages) == [HumanMessage("kept"), AIMessage("also kept")]


def test_the_checkpoint_saver_round_trips(
    read_model_settings: Settings, read_model_projector: Projector
) -> None:
    """A LangGraph checkpoint written through the log reads back from the read model."""
    checkpoint = empty_checkpoint()
    config = {"configurable": {"thread_id": unique("thread"), "checkpoint_ns": ""}}
    with ChatLogCheckpointSaver(read_model_settings) as saver:
        saved = saver.put(config, checkpoint, {"source": "input", "step": -1}, {})  # type: ignore[arg-type]
        found = saver.get_tuple(saved)
        assert found is not None
        assert found.checkpoint["id"] == checkpoint["id"]
        assert [t.checkpoint["id"] for t in saver.list(config)] == [checkpoint["id"]]  # type: ignore[arg-type]
