"""Redis Cluster vs standalone, same run: projection cost, read latency, memory, producer cost.

``python -m chatlog.benchmarks.cluster [--sessions N] [--messages M] [--json PATH]``

Starts a standalone redis-server and a 3-primary cluster (a replica each)
from the same binary, applies the same events (500-byte messages) to both
through :class:`~chatlog.projector.redis_projection.RedisProjection` in
projector-sized batches, then reads sessions back through the read model.

``chatlog bench`` has a section of its own built on the same deployments
(:func:`deployments`, :func:`session_reads`): the live projector's throughput
and the read p50 on the cluster next to the standalone server, same run.

The machine is shared, so wall-clock rates swing with other load; the
figures that feed ``docs/capacity.md`` are CPU times, which do not: the
projector's own process CPU per event (``time.process_time``) and the Redis
servers' CPU per event (``INFO cpu``, user + system, summed over primaries
and, separately, replicas). The producer's CPU per append is measured
against the embedded broker (client side only).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from chatlog.benchmarks.reads import ReadLatency
from chatlog.benchmarks.workload import session_id, user_id
from chatlog.cli.devstack import EmbeddedBroker, EmbeddedRedis, EmbeddedRedisCluster
from chatlog.errors import ChatLogError
from chatlog.histories.read_model import ReadModelReader
from chatlog.histories.store import ChatLog
from chatlog.projector.redis_projection import LogRecord, RedisProjection
from chatlog.redis_clients import open_redis
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings

#: Content size of every benchmark message (bytes), as docs/capacity.md assumes.
CONTENT_BYTES = 500
#: Records per apply call: the projector's default max_poll_records.
BATCH = 2000
RESULTS = Path(__file__).resolve().parent / "results" / "cluster.json"
#: The names of the two deployments (:func:`deployments`).
STANDALONE = "standalone"
CLUSTER = "cluster-3-primaries"


def _events(sessions: int, messages: int, partitions: int) -> list[list[LogRecord]]:
    """Batches of ``sessions`` x ``messages`` appends, round-robin over sessions."""
    text = "x" * CONTENT_BYTES
    offsets = [0] * partitions
    records: list[LogRecord] = []
    for number in range(messages):
        for s in range(sessions):
            session = f"bench-{s:07d}"
            partition = s % partitions
            event = ChatEvent(
                session, MessageAppended(type="human", content=f"{number:06d}{text[6:]}"),
                user_id=f"user-{s % 1000:04d}",
            )
            records.append(LogRecord(partition, offsets[partition], event))
            offsets[partition] += 1
    return [records[k : k + BATCH] for k in range(0, len(records), BATCH)]


def _server_cpu(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        with redis.Redis(port=port) as client:
            cpu: Any = client.info("cpu")
        total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return total


def _used_memory(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with redis.Redis(port=port) as client:
            memory: Any = client.info("memory")
        total += int(memory["used_memory"])
    return total


def measure(
    url: str, primaries: list[int], replicas: list[int], batches: list[list[LogRecord]],
    reads: int,
) -> dict[str, float]:
    """Apply ``batches`` and read sessions back on the Redis at ``url``; return the figures."""
    client = open_redis(url)
    namespace = f"bench:{uuid.uuid4().hex[:8]}"
    projection = RedisProjection(client, namespace)
    events = sum(len(b) for b in batches)
    memory_before = _used_memory(primaries)
    cpu_primary, cpu_replica = _server_cpu(primaries), _server_cpu(replicas)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        result = projection.apply(batch)
        assert result.applied == len(batch) and not result.failed
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu_primary = _server_cpu(primaries) - cpu_primary
    cpu_replica = _server_cpu(replicas) - cpu_replica
    memory = _used_memory(primaries) - memory_before
    sessions = len({r.event.session_id for b in batches for r in b})
    reader = ReadModelReader(client, namespace)
    latencies: list[float] = []
    read_cpu = time.process_time()
    for number in range(reads):
        session = f"bench-{number * 7919 % sessions:07d}"
        start = time.perf_counter()
        snapshot = reader.read(session)
        latencies.append(time.perf_counter() - start)
        assert snapshot.messages
    read_cpu = time.process_time() - read_cpu
    reader.close()
    client.close()
    return {
        "events": events,
        "sessions": sessions,
        "apply_events_per_s_wall": events / wall,
        "projector_cpu_us_per_event": cpu / events * 1e6,
        "redis_primary_cpu_us_per_event": cpu_primary / events * 1e6,
        "redis_replica_cpu_us_per_event": cpu_replica / events * 1e6,
        "redis_bytes_per_message": memory / events,
        "read_p50_ms": statistics.median(latencies) * 1000,
        "read_p99_ms": sorted(latencies)[int(len(latencies) * 0.99)] * 1000,
        "reader_cpu_us_per_read": read_cpu / reads * 1e6,
    }


def session_overhead(url: str) -> float:
    """Redis bytes of a session beyond its messages: meta hash, index entry, list header."""
    client = open_redis(url)
    namespace = f"bench:{uuid.uuid4().hex[:8]}"
    projection = RedisProjection(client, namespace)
    ports = [int(url.rsplit(":", 1)[1].split("/")[0])]
    count = 5000
    before = _used_memory(ports)
    projection.apply(
        [LogRecord(0, n, ChatEvent(f"one-{n}", MessageAppended(type="human", content=""),
                                   user_id=f"user-{n % 1000}")) for n in range(count)]
    )
    per_session = (_used_memory(ports) - before) / count
    client.close()
    return per_session


def producer_cost(appends: int) -> float:
    """CPU µs per acknowledged append in the producing process (embedded broker)."""
    from chatlog.producers.producer import EventProducer

    broker = EmbeddedBroker()
    broker.start()
    try:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers,
                            topic=f"bench-{uuid.uuid4().hex[:8]}")
        text = "x" * CONTENT_BYTES
        with EventProducer(settings) as producer:
            producer.publish([ChatEvent("warm", MessageAppended(type="human", content=text))])
            events = [ChatEvent(f"p-{n % 500}", MessageAppended(type="human", content=text))
                      for n in range(appends)]
            cpu = time.process_time()
            for k in range(0, appends, 500):
                producer.publish(events[k : k + 500])
            return (time.process_time() - cpu) / appends * 1e6
    finally:
        broker.stop()


@contextmanager
def deployments() -> Iterator[dict[str, tuple[str, list[int], list[int]]]]:
    """A fresh standalone redis-server and a 3-primary cluster (a replica each).

    Yields each one's URL, primary ports and replica ports by name
    (:data:`STANDALONE`, :data:`CLUSTER`); both are stopped afterwards.
    """
    standalone = EmbeddedRedis()
    cluster = EmbeddedRedisCluster(primaries=3, replicas=1)
    standalone.start()
    cluster.start()
    try:
        yield {
            STANDALONE: (standalone.url, [standalone.port], []),
            CLUSTER: (
                cluster.url,
                [n.port for n in cluster.nodes[:3]],
                [n.port for n in cluster.nodes[3:]],
            ),
        }
    finally:
        cluster.stop()
        standalone.stop()


def run(sessions: int, messages: int, reads: int, appends: int) -> dict[str, Any]:
    """Every figure of the comparison, as a JSON-ready dict."""
    batches = _events(sessions, messages, partitions=12)
    results: dict[str, Any] = {"sessions": sessions, "messages_per_session": messages,
                               "content_bytes": CONTENT_BYTES, "batch": BATCH}
    with deployments() as running:
        for name, (url, primaries, replicas) in running.items():
            results[name] = measure(url, primaries, replicas, batches, reads)
        results[STANDALONE]["redis_bytes_per_session_overhead"] = session_overhead(
            running[STANDALONE][0]
        )
    results["producer_cpu_us_per_append"] = producer_cost(appends)
    return results


def session_reads(
    settings: dict[str, Settings], sessions: int, messages: int, samples: int
) -> ReadLatency:
    """Time ``samples`` whole-session reads through :class:`ChatLog` on each deployment.

    ``settings`` names the projected namespace on each deployment
    (:data:`CLUSTER`, :data:`STANDALONE`); the benchmark workload's sessions
    (``workload.session_id``) are read in the same random order on both,
    interleaved read by read. Returned as (cluster, standalone) samples.

    Raises:
        ChatLogError: a session read back without its ``messages`` messages.
    """
    rng = random.Random(19)
    clients = {name: ChatLog(s) for name, s in settings.items()}
    timed: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for _ in range(samples):
            number = rng.randrange(sessions)
            for name, chatlog in clients.items():
                history = chatlog.history(session_id(number), user_id(number))
                started = time.perf_counter()
                got = history.messages
                timed[name].append(time.perf_counter() - started)
                if len(got) != messages:
                    raise ChatLogError(
                        f"{name}: session {number} has {len(got)} of {messages} messages"
                    )
    finally:
        for chatlog in clients.values():
            chatlog.close()
    return ReadLatency(timed[CLUSTER], timed[STANDALONE])


def _print(results: dict[str, Any], say: Callable[[str], None] = print) -> None:
    keys = [k for k in results[STANDALONE] if k not in ("events", "sessions")]
    say(f"{'figure':36} {'standalone':>14} {'cluster (3 primaries)':>22}")
    for key in keys:
        cluster = results[CLUSTER].get(key)
        shown = "" if cluster is None else f"{cluster:,.2f}"
        say(f"{key:36} {results[STANDALONE][key]:>14,.2f} {shown:>22}")
    say(f"{'producer_cpu_us_per_append':36} {results['producer_cpu_us_per_append']:>14,.2f}")


def main(argv: list[str] | None = None) -> None:
    """Run the comparison, print it and write the results file."""
    parser = argparse.ArgumentParser(prog="python -m chatlog.benchmarks.cluster")
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=8)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--appends", type=int, default=20000)
    parser.add_argument("--json", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    results = run(options.sessions, options.messages, options.reads, options.appends)
    _print(results)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {options.json}")


if __name__ == "__main__":
    main()
