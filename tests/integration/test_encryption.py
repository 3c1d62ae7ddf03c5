"""Per-subject encryption and crypto-shredding on the real broker, Redis and key store."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import redis
from click.testing import CliRunner
from kafka import KafkaProducer
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.errors import ConcurrentAppendError, DecryptionError, EncryptionKeyRequiredError
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.histories.importers import read_export
from chatlog.keys import ReadModelKeys
from chatlog.producers.key_store import DataKeyStore
from chatlog.projector.replay import Replayer
from chatlog.projector.worker import Projector
from chatlog.schemas.codec import EventCodec
from chatlog.schemas.events import MessageSealed, MessagesSealed
from chatlog.schemas.sealing import KeyEncryptionKey
from tests.helpers import cli_args, delete_namespace, eventually, read_topic, unique

#: A plaintext no other byte sequence in the log can contain by chance.
SECRET = "zanzibar-7f3c-PLAINTEXT-canary"


@dataclass
class Deployment:
    """One encrypted deployment: settings, its facade and a running projector."""

    settings: Settings
    chatlog: ChatLog
    projector: Projector


@pytest.fixture
def deployment(
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> Iterator[Deployment]:
    """An encrypted deployment with a projector (the topics exist before the group joins)."""
    settings = settings_factory(
        encryption_key=KeyEncryptionKey.generate().encoded(), partitions=3
    )
    chatlog = chatlog_factory(settings)
    chatlog.producer
    projector = projector_factory(settings)
    yield Deployment(settings, chatlog, projector)
    if projector.key_store is not None:
        projector.key_store.close()


@contextmanager
def _replayer(settings: Settings) -> Iterator[Replayer]:
    """A Replayer whose key store is closed after the block."""
    replayer = Replayer(settings)
    try:
        yield replayer
    finally:
        if replayer.key_store is not None:
            replayer.key_store.close()


def _write(chatlog: ChatLog, session_id: str, user_id: str | None, texts: list[str]) -> None:
    history = chatlog.history(session_id, user_id=user_id)
    history.add_messages(
        [
            HumanMessage(text, additional_kwargs={"note": text})
            if i % 2 == 0
            else AIMessage(text, response_metadata={"echo": text})
            for i, text in enumerate(texts)
        ]
    )


def _contents(chatlog: ChatLog, session_id: str, user_id: str | None) -> list[str]:
    return [str(m.content) for m in chatlog.history(session_id, user_id=user_id).messages]


class GraphState(TypedDict):
    """The state of the echo graph below."""

    messages: Annotated[list[AnyMessage], add_messages]


def _echo_graph(saver: ChatLogCheckpointSaver) -> Any:
    def reply(state: GraphState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"echo {state['messages'][-1].content}")]}

    builder = StateGraph(GraphState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def test_plaintext_never_reaches_any_topic(deployment: Deployment) -> None:
    """A user's distinctive text is in no partition of events, checkpoints, keys or dead letters."""
    chatlog, settings = deployment.chatlog, deployment.settings
    _write(chatlog, "s-canary", "alice", [SECRET, f"reply {SECRET}"])
    _write(chatlog, "s-anon", None, [f"anonymous {SECRET}"])
    assert _contents(chatlog, "s-canary", "alice") == [SECRET, f"reply {SECRET}"]
    config: RunnableConfig = {"configurable": {"thread_id": "t-canary"}}
    with chatlog.checkpointer() as saver:
        _echo_graph(saver).invoke({"messages": [HumanMessage(SECRET)]}, config)
        saver.get_tuple(config)  # read-your-writes: projected
    with ChatLogCheckpointSaver(settings) as fresh:  # another process opens the values
        state = _echo_graph(fresh).get_state(config)
        assert [m.content for m in state.values["messages"]] == [SECRET, f"echo {SECRET}"]
        fresh.delete_thread("t-canary")
        assert fresh.get_tuple(config) is None
    # A forged record goes to the dead-letter topic, so that topic is not empty.
    forged = KafkaProducer(**settings.kafka_client_options())
    forged.send(settings.topic, key=b"s-canary", value=b"not an event").get(timeout=20)
    forged.close()
    eventually(lambda: deployment.projector.stats.dead_lettered == 1)
    topics = [settings.topic, settings.checkpoint_topic, settings.keys_topic, settings.dlq_topic]
    records = [r for topic in topics for r in read_topic(settings, topic)]
    # 3 messages, >= 4 checkpoint events, 3 keys (alice, s-anon, t-canary) + 1 tombstone, 1 letter
    assert len(records) >= 12
    needle = SECRET.encode()
    for record in records:
        assert needle not in (record.value or b"")
        assert needle not in (record.key or b"")
        assert all(needle not in value for _, value in record.headers)
    sealed = [
        EventCodec().decode(r.value)
        for r in read_topic(settings, settings.topic)
        if r.value != b"not an event"
    ]
    assert sum(isinstance(e.payload, MessageSealed) for e in sealed) == 3


def test_delete_user_shreds_the_past_in_every_rebuild(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """After delete_user, rebuilds (now and as of before it) hold nothing of the user."""
    chatlog, settings = deployment.chatlog, deployment.settings
    _write(chatlog, "s-bob-1", "bob", ["bob one", "bob two"])
    _write(chatlog, "s-bob-2", "bob", ["bob three"])
    _write(chatlog, "s-carol", "carol", ["carol one", "carol two"])
    _write(chatlog, "s-nobody", None, ["nobody one"])
    # Written without a user (sealed under the session's key), then claimed by bob.
    _write(chatlog, "s-bob-claimed", None, ["before the claim"])
    _write(chatlog, "s-bob-claimed", "bob", ["after the claim"])
    assert _contents(chatlog, "s-bob-claimed", "bob") == ["before the claim", "after the claim"]
    assert _contents(chatlog, "s-bob-2", "bob") == ["bob three"]
    before = datetime.now(timezone.utc)
    report = chatlog.erase_user("bob")
    assert sorted(report.sessions) == ["s-bob-1", "s-bob-2", "s-bob-claimed"]
    # bob's key, and the key of the session he claimed.
    assert report.encrypted and report.shredded and len(report.keys_destroyed) == 2

    with _replayer(settings) as replayer:
        fresh = unique(f"{settings.namespace}-fresh")
        progress = replayer.rebuild(fresh)
        assert progress.failed == 0
        reader = ChatLog(replace(settings, namespace=fresh))
        try:
            assert reader.sessions("bob") == []
            assert reader.history("s-bob-1", user_id="bob").messages == []
            assert _contents(reader, "s-carol", "carol") == ["carol one", "carol two"]
            assert _contents(reader, "s-nobody", None) == ["nobody one"]
        finally:
            reader.close()
        assert replayer.reader.shredded == 5  # every message bob's sessions ever had
        assert replayer.verify(fresh).ok
        assert replayer.reader.shredded == 5 + 5  # verify's fold skips them too
        # `chatlog replay session`: nothing of the erased session, and no error.
        assert replayer.rebuild_session("s-bob-1", fresh).messages == 0
        assert replayer.reader.shredded == 5 + 5 + 2

        past = unique(f"{settings.namespace}-past")
        replayer.rebuild(past, as_of=before)
        reader = ChatLog(replace(settings, namespace=past))
        try:
            # The tombstones are after `before`, but the key is gone: nothing of bob.
            assert reader.history("s-bob-1", user_id="bob").messages == []
            assert reader.history("s-bob-2", user_id="bob").messages == []
            assert reader.history("s-bob-claimed", user_id="bob").messages == []
            assert reader.sessions("bob") == []
            assert _contents(reader, "s-carol", "carol") == ["carol one", "carol two"]
        finally:
            reader.close()
        assert replayer.reader.shredded == 5 + 5 + 2 + 5
        for namespace in (fresh, past):
            delete_namespace(redis_client, namespace)


def test_redis_wiped_rebuild_restores_every_user_not_erased(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """Keys live in Kafka: a rebuild after losing Redis restores the users not erased."""
    chatlog, settings = deployment.chatlog, deployment.settings
    _write(chatlog, "s-dan", "dan", ["dan one", "dan two"])
    _write(chatlog, "s-erin", "erin", ["erin one"])
    assert _contents(chatlog, "s-erin", "erin") == ["erin one"]
    chatlog.delete_session("s-erin-gone", None)  # a session without a user: nothing to shred
    deployment.projector.stop()
    delete_namespace(redis_client, settings.namespace)
    with _replayer(settings) as replayer:
        replayer.rebuild(settings.namespace)
        assert replayer.reader.shredded == 0
    assert _contents(chatlog, "s-dan", "dan") == ["dan one", "dan two"]
    assert _contents(chatlog, "s-erin", "erin") == ["erin one"]


def test_spliced_ciphertext_is_dead_lettered(deployment: Deployment) -> None:
    """A ciphertext moved into another session's event does not open and is dead-lettered."""
    chatlog, settings = deployment.chatlog, deployment.settings
    _write(chatlog, "s-victim", "frank", ["frank's secret"])
    _write(chatlog, "s-target", "frank", ["harmless"])
    assert _contents(chatlog, "s-target", "frank") == ["harmless"]
    codec = EventCodec()
    events = [codec.decode(r.value) for r in read_topic(settings, settings.topic)]
    victim = next(e for e in events if e.session_id == "s-victim")
    target = next(e for e in events if e.session_id == "s-target")
    assert isinstance(victim.payload, MessageSealed) and isinstance(target.payload, MessageSealed)
    spliced = replace(
        target,
        payload=replace(
            target.payload, nonce=victim.payload.nonce, ciphertext=victim.payload.ciphertext
        ),
    )
    forged = KafkaProducer(**settings.kafka_client_options())
    forged.send(settings.topic, key=b"s-target", value=codec.encode(spliced)).get(timeout=20)
    forged.close()
    eventually(lambda: deployment.projector.stats.dead_lettered == 1)
    letters = read_topic(settings, settings.dlq_topic)
    reasons = [dict(r.headers).get("dlq-reason", b"").decode() for r in letters]
    assert len(reasons) == 1 and reasons[0].startswith("undecryptable"), reasons
    assert _contents(chatlog, "s-target", "frank") == ["harmless"]


def test_rotation_under_concurrent_appends_loses_nothing(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """Keys re-wrapped while writers append: a reader with only the new KEK reads everything."""
    old_settings = deployment.settings
    early = [(f"s-early-{i}", f"early-{i}") for i in range(5)]
    _write(deployment.chatlog, "s-before", "gina", ["before rotation"])
    for session, user in early:
        _write(deployment.chatlog, session, user, ["early"])
    # This projector knows the old KEK only; the rotation's procedure gives
    # every reader the new one first (the rebuild below reads with it alone).
    deployment.projector.stop()
    new_kek = KeyEncryptionKey.generate().encoded()
    rotating = replace(
        old_settings, encryption_key=new_kek, encryption_old_keys=old_settings.encryption_key
    )
    written: list[tuple[str, str]] = []
    stop = threading.Event()

    def append_new_users() -> None:
        # A writer already configured with the new KEK: new keys are wrapped by it.
        with ChatLog(rotating) as writer:
            i = 0
            while not stop.is_set() or i < 10:
                session, user = f"s-rot-{i}", f"user-{i}"
                _write(writer, session, user, [f"text {i}"])
                written.append((session, user))
                i += 1

    opened = threading.Event()

    def append_existing_users() -> None:
        # A writer still on the old KEK, under keys it opened before the
        # rotation: they stay usable after the re-wrap.
        with ChatLog(old_settings) as writer:
            for i in range(20):
                if i == len(early):
                    opened.set()
                session, user = early[i % len(early)]
                _write(writer, session, user, ["during"])

    threads = [
        threading.Thread(target=append_new_users),
        threading.Thread(target=append_existing_users),
    ]
    for thread in threads:
        thread.start()
    opened.wait(timeout=60)
    store = DataKeyStore(rotating)
    try:
        report = store.rotate()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    second = store.rotate()
    store.close()
    old_id = KeyEncryptionKey.parse(old_settings.encryption_key or "").key_id
    assert (report.rewrapped, report.retired_kek_ids) == (6, [old_id])
    assert second.rewrapped == 0
    retired = replace(old_settings, encryption_key=new_kek, encryption_old_keys=None)
    fresh = unique(f"{old_settings.namespace}-rotated")
    with _replayer(retired) as replayer:
        progress = replayer.rebuild(fresh)
        assert progress.failed == 0 and progress.undecodable == 0
    reader = ChatLog(replace(retired, namespace=fresh))
    try:
        assert _contents(reader, "s-before", "gina") == ["before rotation"]
        for session, user in written:
            assert len(_contents(reader, session, user)) == 1
        for session, user in early:
            assert _contents(reader, session, user) == ["early"] + ["during"] * 4
    finally:
        reader.close()
        delete_namespace(redis_client, fresh)


def test_cli_erase_and_rotate_report_what_they_did(deployment: Deployment) -> None:
    """`chatlog erase --user` reports shredded keys; `chatlog keys rotate` re-wrapped ones."""
    chatlog, settings = deployment.chatlog, deployment.settings
    _write(chatlog, "s-hal", "hal", ["hal one"])
    _write(chatlog, "s-ida", "ida", ["ida one"])
    assert _contents(chatlog, "s-hal", "hal") == ["hal one"]
    env = {"CHATLOG_ENCRYPTION_KEY": settings.encryption_key or ""}
    result = CliRunner().invoke(
        cli, cli_args(settings, "erase", "--user", "hal", "--json"), env=env
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["subject"], report["sessions"], report["shredded"]) == ("hal", ["s-hal"], True)
    assert len(report["keys_destroyed"]) == 1
    deployment.projector.stop()
    new_kek = KeyEncryptionKey.generate().encoded()
    env = {"CHATLOG_ENCRYPTION_KEY": new_kek, "CHATLOG_ENCRYPTION_OLD_KEYS": env[
        "CHATLOG_ENCRYPTION_KEY"
    ]}
    result = CliRunner().invoke(cli, cli_args(settings, "keys", "rotate", "--json"), env=env)
    assert result.exit_code == 0, result.output
    rotated = json.loads(result.output)
    # ida's key only: hal's was destroyed, and stays wrapped by the retired key.
    assert (rotated["rewrapped"], rotated["live_keys"]) == (1, 1)
    assert rotated["kek_id"] == KeyEncryptionKey.parse(new_kek).key_id


def test_live_projection_counts_shredded_events_and_never_dead_letters_them(
    deployment: Deployment, projector_factory: Callable[..., Projector]
) -> None:
    """Events of a user erased before the projector reached them are counted and skipped."""
    from chatlog.projector.metrics import ProjectorMetrics

    chatlog, settings = deployment.chatlog, deployment.settings
    deployment.projector.stop()
    _write(chatlog, "s-jay", "jay", ["jay one", "jay two"])
    _write(chatlog, "s-kim", "kim", ["kim one"])
    # Not projected yet, so no session is listed; jay's key is destroyed all the same.
    # From another ChatLog: the writer's own would wait (read-your-writes) for
    # its writes to be projected before listing jay's sessions.
    with ChatLog(settings) as admin:
        report = admin.erase_user("jay")
    assert (report.sessions, len(report.keys_destroyed)) == ([], 1)
    metrics = ProjectorMetrics()
    projector = projector_factory(settings, metrics=metrics)
    try:
        assert _contents(chatlog, "s-kim", "kim") == ["kim one"]
        eventually(lambda: projector.stats.shredded == 2)
        assert projector.stats.dead_lettered == 0
        assert metrics.registry.get_sample_value("chatlog_events_shredded_total") == 2
        # Another process (the writer itself would wait for its shredded writes).
        with ChatLog(settings) as reader:
            assert reader.history("s-jay", user_id="jay").messages == []
    finally:
        if projector.key_store is not None:
            projector.key_store.close()


def test_async_appends_are_sealed_and_read_back(deployment: Deployment) -> None:
    """aadd_messages seals off the event loop (conditional too); the projector opens it."""
    import asyncio

    chatlog, settings = deployment.chatlog, deployment.settings
    history = chatlog.history("s-async", user_id="lena")

    async def run() -> list[str]:
        await history.aadd_messages([HumanMessage(SECRET), AIMessage("ok")])
        await history.aadd_messages([AIMessage("if two")], expected_version=2)
        return [str(m.content) for m in await history.aget_messages()]

    assert asyncio.run(run()) == [SECRET, "ok", "if two"]
    events = [EventCodec().decode(r.value) for r in read_topic(settings, settings.topic)]
    assert [type(e.payload) for e in events] == [MessageSealed, MessageSealed, MessagesSealed]


def test_conditional_appends_are_sealed_checked_replayed_and_shredded(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    """expected_version works sealed: conflicts found, no plaintext logged, erasure shreds it."""
    chatlog, settings = deployment.chatlog, deployment.settings
    history = chatlog.history("s-cond", user_id="nina")
    history.add_messages([HumanMessage(SECRET), AIMessage("first")], expected_version=0)
    with pytest.raises(ConcurrentAppendError) as conflict:
        chatlog.history("s-cond", user_id="nina").add_messages(
            [HumanMessage(f"late {SECRET}")], expected_version=0
        )
    assert (conflict.value.expected, conflict.value.found) == (0, 2)
    history.add_messages([HumanMessage(f"again {SECRET}")], expected_version=2)
    assert _contents(chatlog, "s-cond", "nina") == [SECRET, "first", f"again {SECRET}"]

    records = read_topic(settings, settings.topic)
    assert all(SECRET.encode() not in (r.value or b"") for r in records)
    events = [EventCodec().decode(r.value) for r in records]
    assert [type(e.payload) for e in events] == [MessagesSealed] * 3
    assert [e.payload.expected_version for e in events] == [0, 0, 2]  # type: ignore[union-attr]

    with _replayer(settings) as replayer:
        # Replays open them: a rebuild reaches the same verdicts.
        restored = unique(f"{settings.namespace}-restored")
        assert replayer.rebuild(restored).failed == 0
        with ChatLog(replace(settings, namespace=restored)) as reader:
            assert _contents(reader, "s-cond", "nina") == [SECRET, "first", f"again {SECRET}"]
        assert replayer.verify(restored).ok
        assert replayer.reader.shredded == 0

        report = chatlog.erase_user("nina")
        assert report.sessions == ["s-cond"] and len(report.keys_destroyed) == 1
        erased = unique(f"{settings.namespace}-erased")
        assert replayer.rebuild(erased).failed == 0
        with ChatLog(replace(settings, namespace=erased)) as reader:
            assert reader.history("s-cond", user_id="nina").messages == []
            assert reader.sessions("nina") == []
        assert replayer.reader.shredded == 3
        assert replayer.verify(erased).ok
        assert replayer.rebuild_session("s-cond", erased).messages == 0
        for namespace in (restored, erased):
            delete_namespace(redis_client, namespace)


def test_shredded_events_still_move_their_sessions_position(
    deployment: Deployment,
    projector_factory: Callable[..., Projector],
    redis_client: redis.Redis,
) -> None:
    """A writer's read of its own erased writes does not wait in vain; a replay agrees."""
    chatlog, settings = deployment.chatlog, deployment.settings
    deployment.projector.stop()
    history = chatlog.history("s-olga", user_id="olga")
    history.add_messages([HumanMessage("olga one")])
    history.add_messages([AIMessage("olga two")])
    _write(chatlog, "s-pete", "pete", ["pete one"])
    # A conditional append waits for its verdict, which comes once projected.
    outcome: list[BaseException | None] = []

    def append_conditionally() -> None:
        try:
            chatlog.history("s-olga-if", user_id="olga").add_messages(
                [HumanMessage("olga if")], expected_version=0
            )
            outcome.append(None)
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    waiting = threading.Thread(target=append_conditionally)
    waiting.start()
    eventually(
        lambda: any(r.key == b"s-olga-if" for r in read_topic(settings, settings.topic))
    )
    with ChatLog(settings) as admin:
        assert admin.erase_user("olga").keys_destroyed
    projector = projector_factory(settings)
    try:
        waiting.join()
        # Its verdict is "shredded": nothing appended, and the call returns.
        assert outcome == [None]
        # The writer's own reads wait until its writes are projected: shredded,
        # they still move the session's position, so the wait ends at once.
        assert history.messages == []
        assert history.version == 0
        assert _contents(chatlog, "s-pete", "pete") == ["pete one"]
        assert chatlog.sessions("olga") == []
        assert chatlog.history("s-olga-if", user_id="olga").messages == []
        assert projector.stats.shredded == 3 and projector.stats.dead_lettered == 0
    finally:
        if projector.key_store is not None:
            projector.key_store.close()
    offsets = [
        r.offset for r in read_topic(settings, settings.topic) if r.key == b"s-olga"
    ]
    live = ReadModelKeys(settings.namespace).meta("s-olga")
    assert int(redis_client.hget(live, "offset") or -1) == max(offsets)
    with _replayer(settings) as replayer:
        fresh = unique(f"{settings.namespace}-fresh")
        replayer.rebuild(fresh)
        rebuilt = ReadModelKeys(fresh).meta("s-olga")
        assert redis_client.hget(rebuilt, "offset") == redis_client.hget(live, "offset")
        assert redis_client.hget(rebuilt, "owner") is None
        with ChatLog(replace(settings, namespace=fresh)) as reader:
            assert reader.history("s-olga", user_id="olga").messages == []
            assert _contents(reader, "s-pete", "pete") == ["pete one"]
        assert replayer.verify(fresh).ok
        delete_namespace(redis_client, fresh)


def test_encrypted_exports_read_back_until_their_subject_is_erased(
    deployment: Deployment, tmp_path: Path
) -> None:
    """`chatlog export --encrypt` seals each session; erasure makes old files unreadable."""
    chatlog, settings = deployment.chatlog, deployment.settings
    _write(chatlog, "s-quinn", "quinn", [SECRET, "quinn two"])
    _write(chatlog, "s-rosa", "rosa", ["rosa one"])
    assert _contents(chatlog, "s-rosa", "rosa") == ["rosa one"]
    env = {"CHATLOG_ENCRYPTION_KEY": settings.encryption_key or ""}
    lines = []
    for user in ("quinn", "rosa"):
        path = tmp_path / f"{user}.jsonl"
        result = CliRunner().invoke(
            cli,
            cli_args(settings, "export", "--user", user, "--encrypt", "--format", "jsonl",
                     "-o", str(path)),
            env=env,
        )
        assert result.exit_code == 0, result.output
        assert SECRET.encode() not in path.read_bytes()
        assert b"two" not in path.read_bytes() and b"rosa one" not in path.read_bytes()
        lines.append(path.read_text())
    both = tmp_path / "both.jsonl"
    both.write_text("".join(lines))
    key_store = chatlog.producer.key_store
    opened = read_export(both, key_store=key_store)
    assert [[str(m.content) for m in s.messages] for s in opened] == [
        [SECRET, "quinn two"], ["rosa one"]
    ]
    with pytest.raises(EncryptionKeyRequiredError):
        read_export(both)
    moved = json.loads(lines[0])
    moved["session_id"] = "s-elsewhere"
    with pytest.raises(DecryptionError):
        read_export(json.dumps(moved).encode(), key_store=key_store)

    chatlog.erase_user("quinn")
    with ChatLog(settings) as other:  # another process: only the key store's word counts
        erased = read_export(both, key_store=other.producer.key_store)
    assert [(s.session_id, s.shredded, s.messages) for s in erased] == [
        ("s-quinn", True, ()), ("s-rosa", False, erased[1].messages)
    ]
    result = CliRunner().invoke(
        cli, cli_args(settings, "import", str(both), "--trust-file-owners"), env=env
    )
    assert result.exit_code == 0, result.output
    assert "1 erased since the export (skipped): s-quinn" in result.output
    assert _contents(chatlog, "s-rosa", "rosa") == ["rosa one"]
    with ChatLog(settings) as reader:
        assert reader.history("s-quinn", user_id="quinn").messages == []
