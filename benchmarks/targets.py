"""Rebuild and live-projector throughput into each read-model target, next to Redis.

``python -m chatlog.benchmarks.targets [--events N] [--postgres URL]
[--dynamodb-endpoint URL] [--json PATH]``

One topic is seeded with ``N`` 500-byte message events (chatlog's codec, the
workload of ``chatlog bench``) and then, in the same run:

* Redis, the baseline: :meth:`Replayer.rebuild` and the real projector
  (pipelined Lua), as ``chatlog bench`` measures them;
* every other target: ``chatlog replay rebuild --target`` and
  ``chatlog projector run --target`` (:class:`TargetReplayer`,
  :class:`TargetProjector`) into SQLite (a file), PostgreSQL (``--postgres``,
  a fresh messages table) and DynamoDB (``--dynamodb-endpoint``; moto's
  server is no stand-in for DynamoDB's latency, so that figure only shows the
  client-side cost).

Rates are steady state, timed from the first applied batch to the last, as
in :mod:`chatlog.benchmarks.throughput`. Services: the embedded stack unless
``KAFKA_BOOTSTRAP_SERVERS``/``REDIS_URL`` are set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chatlog.benchmarks.runner import bench_settings
from chatlog.benchmarks.throughput import Rate, projector_rate, rebuild_rate
from chatlog.benchmarks.workload import encode_all, message_events, seed_topic
from chatlog.errors import ChatLogError
from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector.replay import ReplayProgress
from chatlog.projector.targets import open_target
from chatlog.projector.targets.live import TargetProjector
from chatlog.projector.targets.rebuild import TargetReplayer
from chatlog.settings import Settings


def target_rebuild_rate(settings: Settings, url: str) -> Rate:
    """``chatlog replay rebuild --target url`` over the whole topic."""
    first: list[tuple[float, int]] = []

    def on_progress(progress: ReplayProgress) -> None:
        if not first:
            first.append((time.perf_counter(), progress.done))

    target = open_target(url, settings)
    try:
        progress = TargetReplayer(settings, target).rebuild(on_progress=on_progress)
        finished = time.perf_counter()
    finally:
        target.drop()
        target.close()
    started, first_events = first[0]
    return Rate(progress.done - first_events, finished - started)


def target_projector_rate(
    settings: Settings, url: str, expected: int, timeout_s: float = 600.0
) -> Rate:
    """``chatlog projector run --target url`` until it applied the whole topic."""
    ends = end_offsets(settings, settings.topic)
    target = open_target(url, settings)
    worker = TargetProjector(settings, open_target(url, settings))
    first: tuple[float, int] | None = None
    try:
        with worker.running():
            deadline = time.monotonic() + timeout_s
            while True:
                done = sum(target.positions().values())
                now = time.perf_counter()
                if done and first is None:
                    first = (now, done)
                if done >= sum(ends.values()):
                    break
                if time.monotonic() > deadline:
                    raise ChatLogError(f"the target projector applied {done} of {expected}")
                time.sleep(0.01)
    finally:
        target.drop()
        target.close()
    assert first is not None
    return Rate(expected - first[1], now - first[0])


def _ratio(rate: float, base: float) -> str:
    return f"{rate / base:.2f}x" if base > 0 else "-"


def main(argv: list[str] | None = None) -> None:
    """Seed a topic, measure every target, print the table (and write JSON)."""
    parser = argparse.ArgumentParser(prog="python -m chatlog.benchmarks.targets")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--postgres", default=None, help="SQLAlchemy URL of a database to use")
    parser.add_argument("--dynamodb-endpoint", default=None, help="e.g. a moto_server URL")
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(argv)
    unique = uuid.uuid4().hex[:8]
    rows: list[tuple[str, float, float]] = []  # target, rebuild, projector events/s
    with bench_settings() as (settings, services), tempfile.TemporaryDirectory() as tmp:
        settings = settings.with_(partitions=1)
        ensure_topic(settings.topic, 1, 1, settings=settings)
        producer = EventProducer(settings)
        try:
            records = encode_all(
                message_events(options.events, options.sessions, 500), producer
            )
        finally:
            producer.close()
        seed_topic(settings, records)
        targets = {"sqlite": f"sqlite:///{tmp}/bench.db"}
        if options.postgres:
            targets["postgresql"] = f"{options.postgres}?table=bench_{unique}"
        if options.dynamodb_endpoint:
            endpoint = options.dynamodb_endpoint
            targets["dynamodb (moto)"] = (
                f"dynamodb://bench-{unique}?region=us-east-1&endpoint_url={endpoint}"
            )
        redis_rebuild = rebuild_rate(settings, f"{settings.namespace}:rebuild")
        redis_live = projector_rate(settings, options.events)
        rows.append(("redis (baseline)", redis_rebuild.per_second, redis_live.per_second))
        print(f"redis: rebuild {redis_rebuild.per_second:,.0f} events/s, "
              f"projector {redis_live.per_second:,.0f} events/s", flush=True)
        for number, (name, url) in enumerate(targets.items()):
            group = settings.with_(consumer_group=f"{settings.consumer_group}-{number}")
            rebuilt = target_rebuild_rate(group, url).per_second
            live = target_projector_rate(group, url, options.events).per_second
            rows.append((name, rebuilt, live))
            print(f"{name}: rebuild {rebuilt:,.0f} events/s, projector {live:,.0f} events/s",
                  flush=True)
    table = Table(title=f"{options.events} events of 500 B over {options.sessions} sessions "
                        f"({services})")
    for column in ("target", "rebuild events/s", "vs Redis", "projector events/s", "vs Redis"):
        table.add_column(column, justify="left" if column == "target" else "right")
    _, base_rebuild, base_live = rows[0]
    for name, rebuild, live in rows:
        table.add_row(
            name, f"{rebuild:,.0f}", _ratio(rebuild, base_rebuild),
            f"{live:,.0f}", _ratio(live, base_live),
        )
    Console().print(table)
    if options.json:
        options.json.write_text(json.dumps({
            "events": options.events,
            "rows": [{"target": n, "rebuild_per_s": r, "projector_per_s": p} for n, r, p in rows],
        }, indent=2))


if __name__ == "__main__":
    main()
