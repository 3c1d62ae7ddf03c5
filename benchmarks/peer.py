"""LangChain's own Kafka history (``KafkaChatMessageHistory``) as a peer reference.

It keeps one topic per session and reads by joining a consumer group and
consuming that topic from the beginning, so a read costs a group join plus a
scan of the whole session. It needs ``confluent-kafka``; when that is not
installed the peer figures are reported as missing, with the reason.
"""

from __future__ import annotations

import time
import uuid
import warnings
from dataclasses import dataclass

from chatlog.benchmarks.append import conversation
from chatlog.benchmarks.config import SUNSET_NOTICE
from chatlog.errors import ChatLogError
from chatlog.histories.store import ChatLog
from chatlog.projector.replay import Replayer


@dataclass(frozen=True, slots=True)
class PeerResult:
    """Seconds per single-message append and per whole-session read, or why there are none.

    ``ours_*`` are chatlog's samples, taken interleaved with the peer's.
    """

    appends: list[float]
    reads: list[float]
    ours_appends: list[float]
    ours_reads: list[float]
    unavailable: str | None = None


def kafka_history_peer(
    chatlog: ChatLog, appends: int, reads: int, messages: int, size: int
) -> PeerResult:
    """Time one-message appends and reads of a ``messages``-long session, chatlog's interleaved.

    ``chatlog.settings.topic`` must be a topic of its own, rebuilt to project
    chatlog's session.
    """
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return PeerResult(
            [], [], [], [], "confluent-kafka is not installed (pip install 'chatlog[bench]')"
        )
    settings = chatlog.settings
    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset.
        warnings.filterwarnings("ignore", SUNSET_NOTICE, DeprecationWarning)
        from langchain_community.chat_message_histories import KafkaChatMessageHistory

    # The class names its topic after the session id.
    topic = f"{settings.topic}-peer-{uuid.uuid4().hex[:8]}"
    history = KafkaChatMessageHistory(
        topic, settings.kafka_bootstrap_servers, partition=1, ttl_ms=-1
    )
    ours = chatlog.history("bench-peer-read", "bench-peer")
    try:
        written = conversation(messages, size, seed=2000)
        history.add_messages(written)
        # chatlog gives each message an id on the caller's object (LangGraph's
        # rule), so it gets copies: the peer's read must equal what it was given.
        ours.add_messages([m.model_copy() for m in written])
        Replayer(settings, redis_client=chatlog.redis).rebuild(settings.namespace)
        append_s: list[float] = []
        ours_append_s: list[float] = []
        for n, message in enumerate(conversation(appends, size, seed=3000)):
            started = time.perf_counter()
            history.add_messages([message])
            append_s.append(time.perf_counter() - started)
            mine = chatlog.history(f"bench-peer-{n:06d}", "bench-peer")
            started = time.perf_counter()
            mine.add_messages([message])
            ours_append_s.append(time.perf_counter() - started)
        read_s: list[float] = []
        ours_read_s: list[float] = []
        reader = chatlog.history("bench-peer-read", "bench-peer")
        for _ in range(reads):
            started = time.perf_counter()
            got = history.messages_from_beginning(max_message_count=messages, max_time_sec=60)
            read_s.append(time.perf_counter() - started)
            if got != written:
                raise ChatLogError(
                    f"KafkaChatMessageHistory read {len(got)} of {messages} messages in 60s"
                )
            started = time.perf_counter()
            mine_read = reader.messages
            ours_read_s.append(time.perf_counter() - started)
            if [m.model_copy(update={"id": None}) for m in mine_read] != written:
                raise ChatLogError("chatlog did not read back the peer benchmark's session")
        return PeerResult(append_s, read_s, ours_append_s, ours_read_s)
    finally:
        history.clear()
