"""Appends through ``add_messages`` against the raw client producer sending the same records.

The two are interleaved call by call, so both see the same broker load and
machine noise; each ``add_messages`` call and each raw batch waits for the
broker's acknowledgement of all its records (acks=all) before the next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlog.benchmarks.raw_clients import RawProducer
from chatlog.benchmarks.workload import message_text, session_id
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


def append_shape(
    chatlog: ChatLog, raw: RawProducer, calls: int, shape: int, size: int, *, blocks: int
) -> list[list[float | None]]:
    """Time ``calls`` ``add_messages`` calls of ``shape`` messages against the raw producer.

    Each chatlog call is followed by the raw producer sending the same records
    (same keys, same bytes) and waiting for their acks: the same call shape.
    Returns ``[chatlog msgs/s, raw msgs/s]`` for each of ``blocks`` blocks of calls.
    """
    settings = chatlog.settings
    messages = conversation(shape, size)
    producer = chatlog.producer
    per_block = max(1, calls // blocks)
    runs: list[list[float | None]] = []
    for block in range(blocks):
        chatlog_s = raw_s = 0.0
        for call in range(block * per_block, (block + 1) * per_block):
            sid = session_id(call)
            history = chatlog.history(sid, f"user-{call % 100}")
            records = [
                producer.encode(ChatEvent(sid, to_event(m), user_id=history.user_id))
                for m in messages
            ]
            started = time.perf_counter()
            history.add_messages(messages)
            chatlog_s += time.perf_counter() - started
            started = time.perf_counter()
            raw.send_all(settings.topic, records)
            raw_s += time.perf_counter() - started
        sent = per_block * shape
        runs.append([sent / chatlog_s, sent / raw_s])
    return runs


@dataclass(frozen=True, slots=True)
class AppendLatency:
    """Seconds per single-message append: chatlog's and the raw ``send().get()``'s samples."""

    chatlog: list[float]
    raw: list[float]


def single_append(chatlog: ChatLog, raw: RawProducer, samples: int, size: int) -> AppendLatency:
    """Time ``samples`` one-message ``add_messages`` calls against the raw ``send().get()``."""
    settings: Settings = chatlog.settings
    producer = chatlog.producer
    ours: list[float] = []
    theirs: list[float] = []
    for n in range(samples):
        sid = session_id(n % 1000)
        history = chatlog.history(sid, "user-sync")
        message = HumanMessage(content=message_text(size, n))
        record = producer.encode(ChatEvent(sid, to_event(message), user_id="user-sync"))
        started = time.perf_counter()
        history.add_messages([message])
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw.send_all(settings.topic, [record])
        theirs.append(time.perf_counter() - started)
    return AppendLatency(ours, theirs)
