"""Helpers the tests share: names, waits, topic reads, settings, event strategies.

The fixtures in ``tests/conftest.py`` build on these; test modules import
them from here (never from another test module or from ``conftest``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import redis
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition
from langchain_core.messages import BaseMessage

from chatlog import Settings
from chatlog.keys import ReadModelKeys
from chatlog.producers import end_offsets
from chatlog.schemas.events import (
    ChatEvent,
    InvalidToolCall,
    MessageAppended,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
    SessionCleared,
    SessionDeleted,
    SessionTtlSet,
    ToolCall,
    UsageMetadata,
    UserDeleted,
)


def delete_namespace(client: redis.Redis, namespace: str) -> None:
    """Delete the keys of one namespace (never FLUSHALL: the Redis may be shared)."""
    owned = ReadModelKeys(namespace)
    keys = [k for k in client.scan_iter(match=owned.all_pattern(), count=1000) if owned.owns(k)]
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


def make_test_settings(kafka_bootstrap: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings on the session's services with a unique topic, group and namespace.

    Consumer-group timings are the short ones the embedded broker joins
    quickly with; timeouts are generous for a loaded CI machine.
    """
    unique = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "redis_url": redis_url,
        "topic": f"test-{unique}",
        "namespace": f"test:{unique}",
        "consumer_group": f"group-{unique}",
        # The embedded broker (Tansu) answers a JoinGroup only once half the
        # session timeout has passed, sleeping in 1 s steps (6 s: 3.0 s, 3 s:
        # 2.0 s, 2 s: 1.0 s, measured): every test that starts a projector pays
        # it. Heartbeats every 500 ms leave four to a session window.
        "consumer_session_timeout_ms": 2000,
        "consumer_heartbeat_interval_ms": 500,
        "read_timeout_s": 20.0,
        "publish_timeout_s": 20.0,
    }
    values.update(overrides)
    return Settings(**values)


def delete_namespace_family(client: redis.Redis, namespace: str) -> None:
    """Delete a test's namespace and the ones named after it (``<ns>-rebuilt``, ...)."""
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


def eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait until ``check()`` holds (eventual consistency), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def read_topic(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every raw record of ``topic`` up to its end offsets now, read by manual assignment."""
    ends = end_offsets(settings, topic)
    consumer = KafkaConsumer(
        **settings.kafka_client_options(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
        consumer.assign(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp.partition] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} could not be read to its end"
            for raws in consumer.poll(timeout_ms=200).values():
                records.extend(r for r in raws if r.offset < ends[r.partition])
        return records
    finally:
        consumer.close()


def unique(prefix: str) -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cli_args(settings: Settings, *args: str) -> list[str]:
    """``chatlog`` command-line arguments reaching the services and names of ``settings``."""
    return [
        "--bootstrap-servers",
        settings.kafka_bootstrap_servers,
        "--redis-url",
        settings.redis_url,
        "--topic",
        settings.topic,
        "--namespace",
        settings.namespace,
        *args,
    ]


# -- hypothesis strategies of chat events ------------------------------------

texts = st.text(max_size=80)
optional = st.none() | texts
messages = st.builds(
    MessageAppended,
    type=st.sampled_from(["human", "ai", "tool", "chat", "AIMessageChunk"]),
    content=st.one_of(st.text(max_size=300), st.lists(texts, max_size=4).map(tuple)),
    name=optional,
    id=optional,
    role=optional,
    tool_calls=st.lists(st.builds(ToolCall, name=texts, args=texts, id=optional), max_size=3).map(
        tuple
    ),
    invalid_tool_calls=st.lists(
        st.builds(InvalidToolCall, name=optional, args=optional, id=optional, error=optional),
        max_size=2,
    ).map(tuple),
    usage_metadata=st.none()
    | st.builds(
        UsageMetadata,
        input_tokens=st.integers(-(2**63), 2**63 - 1),
        output_tokens=st.integers(0, 10**9),
        total_tokens=st.integers(0, 10**12),
        details=optional,
    ),
    tool_call_id=optional,
    artifact=optional,
    status=optional,
    additional_kwargs=texts,
    response_metadata=texts,
    extra=texts,
)
sealed_messages = st.builds(
    MessageSealed,
    subject=texts,
    key_id=texts,
    type=texts,
    id=optional,
    nonce=st.binary(max_size=16),
    ciphertext=st.binary(max_size=200),
)
payloads = st.one_of(
    messages,
    st.builds(SessionCleared),
    st.builds(SessionDeleted),
    st.builds(UserDeleted),
    st.builds(SessionTtlSet, ttl_ms=st.none() | st.integers(-(2**63), 2**63 - 1)),
    sealed_messages,
    st.builds(
        MessagesAppended,
        expected_version=st.integers(0, 2**63 - 1),
        messages=st.lists(messages, max_size=3).map(tuple),
    ),
    st.builds(
        MessagesSealed,
        expected_version=st.integers(0, 2**63 - 1),
        messages=st.lists(sealed_messages, max_size=3).map(tuple),
    ),
)
events = st.builds(
    ChatEvent,
    session_id=texts,
    payload=payloads,
    user_id=optional,
    source=optional,
    occurred_at=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2400, 1, 1),
        timezones=st.just(timezone.utc),
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)


def without_ids(messages: list[BaseMessage]) -> list[BaseMessage]:
    """``messages`` without their ids (chatlog gives each message one), to compare to literals."""
    return [m.model_copy(update={"id": None}) for m in messages]
