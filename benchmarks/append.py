"""Appends through ``add_messages`` against a raw kafka-python producer sending the same records.

The two are interleaved call by call, so both see the same broker load and
machine noise; each ``add_messages`` call and each raw batch waits for the
broker's acknowledgement of all its records (acks=all) before the next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlog.benchmarks.workload import message_text, raw_producer, session_id
from chatlog.histories.messages import to_event
from chatlog.histories.store import ChatLog
from chatlog.schemas.events import ChatEvent
from chatlog.settings import Settings


def conversation(count: int, size: int, *, seed: int = 0) -> list[BaseMessage]:
    """``count`` alternating human/AI messages of ``size`` bytes each."""
    return [
        (HumanMessage if n % 2 == 0 else AIMessage)(content=message_text(size, seed + n))
        for n in range(count)
    ]


@dataclass(frozen=True, slots=True)
class AppendThroughput:
    """Messages per second of batched ``add_messages`` and of the raw producer."""

    chatlog: float
    raw: float


def batched_append(chatlog: ChatLog, total: int, batch: int, size: int) -> AppendThroughput:
    """Append ``total`` messages in ``add_messages`` calls of ``batch`` messages."""
    settings = chatlog.settings
    messages = conversation(batch, size)
    producer = chatlog.producer
    raw = raw_producer(settings)
    chatlog_s = raw_s = 0.0
    try:
        for call in range(total // batch):
            sid = session_id(call)
            history = chatlog.history(sid, f"user-{call % 100}")
            # The raw side sends what chatlog would have sent: same keys, same bytes.
            records = [
                producer.encode(ChatEvent(sid, to_event(m), user_id=history.user_id))
                for m in messages
            ]
            started = time.perf_counter()
            history.add_messages(messages)
            chatlog_s += time.perf_counter() - started
            started = time.perf_counter()
            for r in records:
                raw.send(settings.topic, key=r.key, value=r.value, headers=r.headers)
            raw.flush(timeout=settings.publish_timeout_s)
            raw_s += time.perf_counter() - started
    finally:
        raw.close(timeout=10)
    sent = total // batch * batch
    return AppendThroughput(sent / chatlog_s, sent / raw_s)


@dataclass(frozen=True, slots=True)
class AppendLatency:
    """Seconds per single-message append: chatlog's and the raw ``send().get()``'s samples."""

    chatlog: list[float]
    raw: list[float]


def single_append(chatlog: ChatLog, samples: int, size: int) -> AppendLatency:
    """Time ``samples`` one-message ``add_messages`` calls against ``send().get()``."""
    settings: Settings = chatlog.settings
    producer = chatlog.producer
    raw = raw_producer(settings)
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for n in range(samples):
            sid = session_id(n % 1000)
            history = chatlog.history(sid, "user-sync")
            message = HumanMessage(content=message_text(size, n))
            record = producer.encode(ChatEvent(sid, to_event(message), user_id="user-sync"))
            started = time.perf_counter()
            history.add_messages([message])
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            raw.send(
                settings.topic, key=record.key, value=record.value, headers=record.headers
            ).get(timeout=settings.publish_timeout_s)
            theirs.append(time.perf_counter() - started)
    finally:
        raw.close(timeout=10)
    return AppendLatency(ours, theirs)
