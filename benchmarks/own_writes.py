"""Read-your-writes on an idle stack, and what an idle projector costs.

The projector runs in a process of its own, as in production; the writer
appends (or puts a checkpoint) and reads it back in this process, so the
figure is the wait for the projector plus the read. The baseline is the same
read once the write is visible: the read's own cost, measured in the same
loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from langchain_core.messages import HumanMessage

from chatlog.benchmarks.cpu import live_threads_cpu_s
from chatlog.benchmarks.workload import message_text
from chatlog.errors import ChatLogError
from chatlog.histories.store import ChatLog
from chatlog.producers.admin import end_offsets
from chatlog.producers.librdkafka import client_config
from chatlog.settings import Settings


@dataclass(frozen=True, slots=True)
class OwnWrites:
    """Seconds from a write returning to its read-back, and of the same read once visible."""

    waited: list[float]
    visible: list[float]


def message_read_back(chatlog: ChatLog, samples: int, size: int) -> OwnWrites:
    """``add_messages`` of one message on a new session, then read that session back."""
    waited: list[float] = []
    visible: list[float] = []
    for n in range(samples):
        history = chatlog.history(f"bench-ryw-{n:06d}", "bench-ryw")
        message = HumanMessage(content=message_text(size, n))
        history.add_messages([message])
        started = time.perf_counter()
        got = history.messages
        waited.append(time.perf_counter() - started)
        if got != [message]:
            raise ChatLogError(f"read-your-writes returned {len(got)} messages, not the 1 written")
        started = time.perf_counter()
        _ = history.messages
        visible.append(time.perf_counter() - started)
    return OwnWrites(waited, visible)


def checkpoint_read_back(chatlog: ChatLog, samples: int) -> OwnWrites:
    """A checkpointer ``put`` on a new thread, then ``get_tuple`` of that thread."""
    from langgraph.checkpoint.base import empty_checkpoint

    waited: list[float] = []
    visible: list[float] = []
    with chatlog.checkpointer() as saver:
        for n in range(samples):
            config: Any = {"configurable": {"thread_id": f"bench-ryw-{n:06d}",
                                            "checkpoint_ns": ""}}
            checkpoint = empty_checkpoint()
            saver.put(config, checkpoint, {"source": "input", "step": n}, {})
            started = time.perf_counter()
            got = saver.get_tuple(config)
            waited.append(time.perf_counter() - started)
            if got is None or got.checkpoint["id"] != checkpoint["id"]:
                raise ChatLogError("the checkpointer did not read back the checkpoint just put")
            started = time.perf_counter()
            saver.get_tuple(config)
            visible.append(time.perf_counter() - started)
    return OwnWrites(waited, visible)


def idle_share(pid: int, seconds: float) -> float:
    """Percent of one core process ``pid`` uses over ``seconds`` of wall time."""
    before = live_threads_cpu_s(pid)
    time.sleep(seconds)
    return (live_threads_cpu_s(pid) - before) / seconds * 100


def idle_raw_consumer_share(settings: Settings, seconds: float) -> float:
    """Percent of one core a bare consumer of ``settings.transport`` uses polling an idle topic.

    It is the projector's client with the projector's fetch wait
    (``fetch_max_wait_ms``), in this process, which does nothing else meanwhile.
    """
    wait_ms = settings.fetch_max_wait_ms
    ends = end_offsets(settings, settings.topic)
    if settings.transport == "confluent":
        return _idle_raw_confluent_share(settings, ends, wait_ms, seconds)
    consumer = KafkaConsumer(
        **settings.kafka_client_options(), enable_auto_commit=False,
        fetch_max_wait_ms=wait_ms,
    )
    try:
        consumer.assign([TopicPartition(settings.topic, p) for p in ends])
        consumer.poll(timeout_ms=100)
        before, began = time.process_time(), time.monotonic()
        while time.monotonic() - began < seconds:
            consumer.poll(timeout_ms=100)
        return (time.process_time() - before) / (time.monotonic() - began) * 100
    finally:
        consumer.close(autocommit=False)


def _idle_raw_confluent_share(
    settings: Settings, ends: dict[int, int], wait_ms: int, seconds: float
) -> float:
    import confluent_kafka

    consumer = confluent_kafka.Consumer({
        **client_config(settings), "group.id": f"{settings.consumer_group}.raw",
        "enable.auto.commit": False, "fetch.wait.max.ms": wait_ms,
    })
    try:
        consumer.assign([confluent_kafka.TopicPartition(settings.topic, p, o)
                         for p, o in ends.items()])
        consumer.consume(500, 0.1)
        before, began = time.process_time(), time.monotonic()
        while time.monotonic() - began < seconds:
            consumer.consume(500, 0.1)
        return (time.process_time() - before) / (time.monotonic() - began) * 100
    finally:
        consumer.close()
