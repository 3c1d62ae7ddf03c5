"""Reading a whole session: chatlog against LangChain's ``RedisChatMessageHistory``.

Both read the same messages from the same Redis, interleaved read by read;
both return ``list[BaseMessage]`` built by ``messages_from_dict``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

from chatlog.benchmarks.append import conversation
from chatlog.benchmarks.config import SUNSET_NOTICE
from chatlog.errors import ChatLogError
from chatlog.histories.store import ChatLog
from chatlog.projector.replay import Replayer


@dataclass(frozen=True, slots=True)
class ReadLatency:
    """Seconds per read of the whole session: chatlog's and LangChain's samples."""

    chatlog: list[float]
    langchain: list[float]


def session_reads(chatlog: ChatLog, messages: int, samples: int, size: int) -> ReadLatency:
    """Write one ``messages``-long session to both histories, then time ``samples`` reads each.

    ``chatlog.settings.topic`` must be a topic of its own: it is rebuilt into
    the read model to project the session.
    """
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset; the
        # benchmark compares against it precisely because users still pick it.
        warnings.filterwarnings("ignore", SUNSET_NOTICE, DeprecationWarning)
        from langchain_community.chat_message_histories import RedisChatMessageHistory

    settings = chatlog.settings
    written = conversation(messages, size, seed=1000)
    history = chatlog.history("bench-read", "bench-reader")
    history.add_messages(written)
    replayer = Replayer(settings, redis_client=chatlog.redis)
    replayer.rebuild(settings.namespace)
    peer = RedisChatMessageHistory(
        "bench-read", url=settings.redis_url, key_prefix=f"{settings.namespace}:langchain:"
    )
    peer.clear()
    peer.add_messages(written)
    try:
        if history.messages != written or peer.messages != written:
            raise ChatLogError("the two histories do not hold the messages written")
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(samples):
            started = time.perf_counter()
            _ = history.messages
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            _ = peer.messages
            theirs.append(time.perf_counter() - started)
        return ReadLatency(ours, theirs)
    finally:
        peer.clear()
        peer.redis_client.close()


def redis_history_appends(chatlog: ChatLog, samples: int, size: int) -> ReadLatency:
    """Time one-message ``add_messages`` on chatlog and on ``RedisChatMessageHistory``, interleaved.

    The peer writes to Redis only (no log, no durability beyond Redis's own),
    so this row is reported, not judged.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", SUNSET_NOTICE, DeprecationWarning)
        from langchain_community.chat_message_histories import RedisChatMessageHistory

    settings = chatlog.settings
    peer = RedisChatMessageHistory(
        "bench-append", url=settings.redis_url, key_prefix=f"{settings.namespace}:langchain:"
    )
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for n, message in enumerate(conversation(samples, size, seed=4000)):
            history = chatlog.history(f"bench-append-{n:06d}", "bench-appender")
            started = time.perf_counter()
            history.add_messages([message])
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            peer.add_messages([message])
            theirs.append(time.perf_counter() - started)
        return ReadLatency(ours, theirs)
    finally:
        peer.clear()
        peer.redis_client.close()
