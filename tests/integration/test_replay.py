"""Replay and rebuild against a real broker and Redis: wipe, as-of, verify, resume, switch."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from click.testing import CliRunner
from langchain_core.messages import HumanMessage

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.errors import ChatLogError, NamespaceInUseError
from chatlog.histories.read_model import ReadModelReader
from chatlog.keys import ReadModelKeys, active_namespace_key
from chatlog.namespaces import POINTER_TTL_S, ActiveNamespace
from chatlog.producers.admin import end_offsets, ensure_topic, partition_count
from chatlog.producers.producer import EventProducer
from chatlog.projector import Projector
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.replay import HANDOFF_S, Replayer, ReplayProgress, partition_for
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    SessionCleared,
    SessionDeleted,
)
from tests.helpers import cli_args, delete_namespace

SESSIONS = 300
USERS = 30
PARTITIONS = 6

Snapshot = dict[str, list[bytes]]


def read_all(client: redis.Redis, namespace: str) -> Snapshot:
    """Every session of ``namespace`` with its stored messages."""
    keys = ReadModelKeys(namespace)
    sessions = sorted(
        ReadModelKeys.session_of(k.decode())
        for k in client.scan_iter(match=keys.session_pattern(), count=1000)
    )
    pipe = client.pipeline(transaction=False)
    for session in sessions:
        pipe.lrange(keys.messages(session), 0, -1)
    return dict(zip(sessions, pipe.execute(), strict=True))


def wait_caught_up(client: redis.Redis, settings: Settings, namespace: str) -> None:
    """Wait until ``namespace``'s applied positions reach the end of every partition."""
    ends = end_offsets(settings, settings.topic)
    positions = AppliedPositions(client, namespace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        applied = positions.read()
        if all(applied.get(p, 0) >= end for p, end in ends.items() if end):
            return
        time.sleep(0.05)
    raise AssertionError(f"projection of {namespace} never caught up: {positions.read()} < {ends}")


def workload(rng: random.Random, count: int, sessions: list[tuple[str, str]]) -> list[ChatEvent]:
    """Appends over ``sessions`` with a few clears and deletions in between."""
    events = []
    for n in range(count):
        session, user = rng.choice(sessions)
        roll = rng.random()
        if roll < 0.03:
            payload: object = SessionCleared()
        elif roll < 0.04:
            payload = SessionDeleted()
        else:
            kind = rng.choice(("human", "ai"))
            payload = MessageAppended(kind, f"{kind} message {n} in {session}")
        events.append(ChatEvent(session, payload, user_id=user))  # type: ignore[arg-type]
    return events


@dataclass
class Deployment:
    """One topic with a live projector, the events published and snapshots taken."""

    settings: Settings
    client: redis.Redis
    projector: Projector
    sessions: list[tuple[str, str]]
    partition_of: dict[str, int] = field(default_factory=dict)
    before: Snapshot = field(default_factory=dict)
    as_of_ms: int = 0
    after: Snapshot = field(default_factory=dict)
    events: int = 0
    projector_rate: float = 0.0
    namespaces: list[str] = field(default_factory=list)

    def namespace(self, label: str) -> str:
        name = f"{self.settings.namespace}-{label}"
        self.namespaces.append(name)
        return name

    def cli(self, *args: str) -> tuple[int, str]:
        runner = CliRunner()
        result = runner.invoke(
            cli,
            cli_args(self.settings, *args),
        )
        if isinstance(result.exception, ChatLogError):
            return 1, str(result.exception)  # what ``chatlog`` (main) prints and exits with
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output


@pytest.fixture(scope="module")
def deployment(kafka_bootstrap: str, redis_url: str) -> Iterator[Deployment]:
    """Thousands of events over hundreds of sessions, projected live, in two phases."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        topic=f"replay-{tag}",
        namespace=f"test:replay-{tag}",
        consumer_group=f"replay-{tag}",
        consumer_session_timeout_ms=6000,
        consumer_heartbeat_interval_ms=1000,
        read_timeout_s=20.0,
        publish_timeout_s=20.0,
        partitions=PARTITIONS,
    )
    client = redis.Redis.from_url(redis_url)
    rng = random.Random(4)
    sessions = [(f"s-{n:04d}-{tag}", f"u-{n % USERS}") for n in range(SESSIONS)]
    ensure_topic(settings.topic, PARTITIONS, settings=settings)
    producer = EventProducer(settings)
    first = workload(rng, 3000, sessions)
    second = workload(rng, 800, sessions)
    # The live projector starts after phase one is in the log, so its catch-up
    # rate is measured on the same events the rebuilds read.
    positions = []
    for start in range(0, len(first), 500):
        positions += producer.publish(first[start : start + 500])
    batches: list[tuple[float, int]] = []
    projector = Projector(settings, on_batch=lambda _, n: batches.append((time.perf_counter(), n)))
    with projector.running():
        deploy = Deployment(settings, client, projector, sessions)
        wait_caught_up(client, settings, settings.namespace)
        (t0, _), (t1, _) = batches[0], batches[-1]
        applied = sum(n for _, n in batches[1:])
        deploy.projector_rate = applied / (t1 - t0) if t1 > t0 else 0.0
        deploy.before = read_all(client, settings.namespace)
        time.sleep(0.01)
        deploy.as_of_ms = int(time.time() * 1000)
        time.sleep(0.01)
        for start in range(0, len(second), 400):
            positions += producer.publish(second[start : start + 400])
        wait_caught_up(client, settings, settings.namespace)
        deploy.after = read_all(client, settings.namespace)
        deploy.events = len(first) + len(second)
        for event, position in zip(first + second, positions, strict=True):
            deploy.partition_of[event.session_id] = position.partition
        producer.close()
        yield deploy
    for namespace in [settings.namespace, *deploy.namespaces]:
        delete_namespace(client, namespace)
    client.delete(active_namespace_key(settings.topic))
    client.close()


def test_rebuild_after_wipe_restores_every_message(deployment: Deployment) -> None:
    """Wiping the namespace and rebuilding it gives back the read model message for message."""
    settings, client = deployment.settings, deployment.client
    assert len(deployment.after) >= SESSIONS * 0.9
    replayer = Replayer(settings)
    assert replayer.drop(settings.namespace, allow_active=True) > 0
    assert read_all(client, settings.namespace) == {}
    first: list[tuple[float, int]] = []

    def on_progress(progress: ReplayProgress) -> None:
        first.append((time.perf_counter(), progress.done))

    progress = replayer.rebuild(settings.namespace, on_progress=on_progress)
    finished = time.perf_counter()
    assert read_all(client, settings.namespace) == deployment.after
    assert progress.done == deployment.events
    # The live projector notices the wiped namespace too and repairs it in
    # place (loss detection), so some events may already be there: skipped.
    assert progress.applied + progress.skipped + progress.failed == deployment.events
    assert not progress.resumed
    rebuild_rate = (progress.done - first[0][1]) / (finished - first[0][0])
    print(
        f"\nrebuild {rebuild_rate:,.0f} events/s vs live projector catch-up "
        f"{deployment.projector_rate:,.0f} events/s ({deployment.events} events)"
    )


def test_as_of_rebuild_equals_the_history_observed_then(deployment: Deployment) -> None:
    """A rebuild as of a past time equals what readers saw at that time."""
    namespace = deployment.namespace("asof")
    as_of = time.gmtime(deployment.as_of_ms / 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", as_of) + f".{deployment.as_of_ms % 1000:03d}Z"
    code, output = deployment.cli("replay", "rebuild", "--namespace", namespace,
                                  "--as-of", stamp, "--json")
    assert code == 0, output
    result = json.loads(output)
    assert result["as_of"].startswith(stamp[:19])
    assert result["events_read"] < deployment.events
    assert read_all(deployment.client, namespace) == deployment.before
    assert deployment.before != deployment.after


def test_verify_reports_tampered_sessions(deployment: Deployment) -> None:
    """Verify finds sessions with deleted, added, reordered and altered messages, and exits 1."""
    client = deployment.client
    namespace = deployment.namespace("tampered")
    Replayer(deployment.settings).rebuild(namespace)
    assert Replayer(deployment.settings).verify(namespace).ok
    long = [s for s, m in sorted(deployment.after.items()) if len(m) >= 3]
    deleted, added, reordered, altered = long[:4]
    keys = ReadModelKeys(namespace)
    client.lrem(keys.messages(deleted), 1, deployment.after[deleted][1].decode())
    client.rpush(keys.messages(added), deployment.after[added][0])
    first, second = (m.decode() for m in deployment.after[reordered][:2])
    client.lset(keys.messages(reordered), 0, second)
    client.lset(keys.messages(reordered), 1, first)
    client.lset(keys.messages(altered), 2, '{"type":"human","data":{"content":"forged"}}')

    code, output = deployment.cli("replay", "verify", "--namespace", namespace, "--json")
    assert code == 1, output
    report = json.loads(output)
    kinds = {d["session_id"]: d["kinds"] for d in report["differences"]}
    assert kinds == {
        deleted: ["missing"],
        added: ["extra"],
        reordered: ["reordered"],
        altered: ["altered"],
    }
    assert report["sessions_checked"] == len(deployment.after)


def test_killed_rebuild_resumes_from_its_checkpoint(deployment: Deployment) -> None:
    """A rebuild that dies half-way resumes from its recorded positions, not from offset zero."""
    namespace = deployment.namespace("resumed")
    small = deployment.settings.with_(max_poll_records=100)

    class Killed(Exception):
        pass

    def die_after_ten_batches(progress: ReplayProgress) -> None:
        die_after_ten_batches.calls += 1  # type: ignore[attr-defined]
        if die_after_ten_batches.calls == 10:  # type: ignore[attr-defined]
            raise Killed

    die_after_ten_batches.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(Killed):
        Replayer(small).rebuild(namespace, on_progress=die_after_ten_batches)
    checkpoint = AppliedPositions(deployment.client, namespace).read()
    read_before_kill = sum(checkpoint.values())
    assert 0 < read_before_kill < deployment.events

    progress = Replayer(small).rebuild(namespace)
    assert progress.resumed
    assert progress.done == deployment.events - read_before_kill
    assert read_all(deployment.client, namespace) == read_all(
        deployment.client, Replayer(small).active_namespace()
    )


def test_session_replay_reads_only_its_partition(deployment: Deployment) -> None:
    """Rebuilding one session reads only its partition and restores its messages in place."""
    client, settings = deployment.client, deployment.settings
    assert partition_count(settings, settings.topic) == PARTITIONS
    for session, partition in deployment.partition_of.items():
        assert partition_for(session, PARTITIONS) == partition
    replayer = Replayer(settings)
    namespace = replayer.active_namespace()
    current = read_all(client, namespace)
    session = next(s for s, m in sorted(current.items()) if len(m) >= 2)
    keys = ReadModelKeys(namespace)
    client.ltrim(keys.messages(session), 1, 0)
    client.rpush(keys.messages(session), b"junk")

    code, output = deployment.cli("replay", "session", session, "--json")
    assert code == 0, output
    result = json.loads(output)
    assert result["partition"] == deployment.partition_of[session]
    ends = end_offsets(settings, settings.topic)
    assert result["partition_events_read"] == ends[result["partition"]]
    assert client.lrange(keys.messages(session), 0, -1) == current[session]
    assert read_all(client, namespace) == current
    assert not list(client.scan_iter(match=f"{namespace}:replay-*", count=1000))


@pytest.mark.parametrize("handoff_s", [HANDOFF_S, 0.0], ids=["handoff", "projector-fills-gap"])
def test_rebuild_and_switch_while_appends_flow_loses_nothing(
    deployment: Deployment, handoff_s: float
) -> None:
    """Readers switched mid-traffic see every write exactly once, before and after the switch.

    Without a hand-off the rebuild stops at the switch, and the live projector
    must re-read what the new namespace lacks instead of skipping past it.
    """
    settings, client = deployment.settings, deployment.client
    old = Replayer(settings).active_namespace()
    new = deployment.namespace(f"switched-{handoff_s:g}")
    writers = [f"w-{n}-{uuid.uuid4().hex[:6]}" for n in range(8)]
    written: dict[str, list[str]] = {w: [] for w in writers}
    stop = threading.Event()
    failures: list[BaseException] = []
    seen_namespaces: set[str] = set()

    def write(session: str, chatlog: ChatLog) -> None:
        history = chatlog.history(session, "writer")
        try:
            n = 0
            while not stop.is_set():
                text = f"{session} #{n}"
                history.add_messages([HumanMessage(text)])
                written[session].append(text)
                # Read-your-writes through the switch: exactly what was written, in order.
                assert [m.content for m in history.messages] == written[session]
                seen_namespaces.add(chatlog.reader.keys.namespace)
                n += 1
        except BaseException as exc:
            failures.append(exc)

    def not_switched_yet(progress: ReplayProgress) -> None:
        # Readers never see the namespace while it is being built (before the hand-off).
        if progress.switched_from is None:
            assert client.get(active_namespace_key(settings.topic)) in (None, old.encode())

    with ChatLog(settings) as chatlog:
        threads = [threading.Thread(target=write, args=(w, chatlog)) for w in writers]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        progress = Replayer(settings).rebuild(
            new, switch=True, on_progress=not_switched_yet, handoff_s=handoff_s
        )
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not failures, failures
        assert progress.switched_from == old
        assert seen_namespaces == {old, new}
        assert chatlog.reader.keys.namespace == new
        for session in writers:
            assert [m.content for m in chatlog.history(session, "writer").messages] == written[
                session
            ]
    assert all(len(texts) > 5 for texts in written.values())
    wait_caught_up(client, settings, new)
    assert deployment.projector.namespace == new
    assert Replayer(settings).verify(new).ok


def test_drop_refuses_the_active_namespace_and_removes_an_old_one(deployment: Deployment) -> None:
    """``replay drop`` deletes an inactive namespace and refuses the active one."""
    replayer = Replayer(deployment.settings)
    active = replayer.active_namespace()
    with pytest.raises(NamespaceInUseError):
        replayer.drop(active)
    code, output = deployment.cli("replay", "drop", "--namespace", active)
    assert code == 1 and "active" in output
    old = deployment.namespace("old")
    replayer.rebuild(old)
    code, output = deployment.cli("replay", "drop", "--namespace", old, "--json")
    assert code == 0, output
    assert json.loads(output)["deleted_keys"] > 0
    assert read_all(deployment.client, old) == {}
    assert read_all(deployment.client, active) != {}


def test_readers_follow_a_switch_once_their_cached_pointer_expires(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Sync and async reads move to the switched namespace after at most the pointer TTL."""
    other = f"{settings.namespace}-b"
    redis_client.rpush(ReadModelKeys(other).messages("s"), "in b")
    reader = ReadModelReader(
        redis_client, settings.namespace, redis_url=settings.redis_url,
        active=ActiveNamespace.of(settings),
    )
    try:
        assert reader.read("s").messages == []
        assert ActiveNamespace.of(settings).switch(redis_client, other) == settings.namespace
        time.sleep(POINTER_TTL_S)
        assert reader.read("s").messages == [b"in b"]
        assert asyncio.run(reader.aread("s")).messages == [b"in b"]
    finally:
        delete_namespace(redis_client, other)
        redis_client.delete(active_namespace_key(settings.topic))
