"""The cost of idempotent appends: Redis memory per message id, projector time per message.

Run with ``python -m chatlog.benchmarks.dedupe [REDIS_URL]`` (default: an
embedded redis-server). It prints, for 10,000 messages of one session, the
MEMORY USAGE of the session's id set per message, and the time the apply
script and the change reader take per message with and without ids (best of
five runs of 20,000 one-message events over 2,000 sessions).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import redis

from chatlog.keys import ReadModelKeys
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change
from chatlog.projector.redis_projection import RedisProjection
from chatlog.schemas.codec import EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended

EVENTS = 20_000
SESSIONS = 2_000
RUNS = 5


class _Record:
    def __init__(self, offset: int, event: ChatEvent, codec: EventCodec) -> None:
        self.key = event.session_id.encode()
        self.value = codec.encode(event)
        self.partition = 0
        self.offset = offset


def _best(run: Callable[[], None]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _read_all(reader: ChangeReader, records: list[_Record]) -> None:
    for record in records:
        reader.read(record)


def _apply_all(target: RedisProjection, changes: list[Any]) -> None:
    for start in range(0, len(changes), 500):
        target.apply(changes[start : start + 500])


def _apply_next(targets: Iterator[RedisProjection], changes: list[Any]) -> None:
    _apply_all(next(targets), changes)


def measure(client: redis.Redis) -> dict[str, Any]:
    """The figures, measured on ``client`` in throw-away namespaces."""
    codec = EventCodec()
    reader = ChangeReader(codec, 1 << 20)
    figures: dict[str, Any] = {}
    namespace = f"bench:dedupe:{uuid.uuid4().hex[:8]}"
    projection = RedisProjection(client, namespace)
    changes = [
        Change(0, n, "one", "u", 1_700_000_000_000 + n, "A", b'{"x":1}', str(uuid.uuid4()))
        for n in range(10_000)
    ]
    projection.apply(changes)
    ids = ReadModelKeys(namespace).message_ids("one")
    figures["id_set_bytes_per_message"] = round(int(client.memory_usage(ids) or 0) / 10_000, 1)
    for with_ids in (False, True):
        events = [
            ChatEvent(
                f"s{n % SESSIONS}",
                MessageAppended("human", "x" * 400, id=str(uuid.uuid4()) if with_ids else None),
                user_id="u",
            )
            for n in range(EVENTS)
        ]
        records = [_Record(n, e, codec) for n, e in enumerate(events)]
        label = "with_ids" if with_ids else "without_ids"
        read = _best(partial(_read_all, reader, records))
        read_changes = [reader.read(r) for r in records]
        # A fresh namespace per run, so every run appends rather than skips.
        targets = iter(
            [RedisProjection(client, f"{namespace}:{label}:{n}") for n in range(RUNS)]
        )
        applied = _best(partial(_apply_next, targets, read_changes))
        figures[f"read_us_per_message_{label}"] = round(read / EVENTS * 1e6, 2)
        figures[f"apply_us_per_message_{label}"] = round(applied / EVENTS * 1e6, 2)
    for key in client.scan_iter(f"{namespace}*", count=1000):
        client.delete(key)
    return figures


def main() -> None:
    """Print the figures (embedded redis-server unless a URL is given)."""
    if len(sys.argv) > 1:
        print(measure(redis.Redis.from_url(sys.argv[1])))
        return
    from chatlog.cli.devstack import EmbeddedRedis

    server = EmbeddedRedis()
    server.start()
    try:
        print(measure(redis.Redis.from_url(server.url)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
