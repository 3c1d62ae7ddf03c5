"""End to end on a real broker and Redis: append → event → projector → Redis → history."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import pytest
import redis
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from chatlog import ChatLog, Settings
from chatlog.errors import (
    InvalidMessageError,
    InvalidSessionIdError,
    MessageSerializationError,
    MessageTooLargeError,
    ProjectionLagError,
)
from chatlog.histories.messages import from_stored
from chatlog.producers import end_offsets
from chatlog.producers.admin import ensure_topic, topic_exists
from chatlog.projector import LogRecord, Projector, RedisProjection
from chatlog.schemas import EventCodec
from chatlog.schemas.events import MessageAppended, SessionCleared
from tests.helpers import delete_namespace, read_topic, unique, without_ids


def read_log(settings: Settings) -> list[LogRecord]:
    """Every record of the topic, decoded, with its coordinates."""
    codec = EventCodec()
    return [
        LogRecord(raw.partition, raw.offset, codec.decode(raw.value))
        for raw in read_topic(settings, settings.topic)
    ]


def test_messages_round_trip_through_kafka_and_redis(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """What add_messages appends comes back equal through the projector and Redis."""
    history = module_chatlog.history(unique("roundtrip"), user_id="alice")
    sent = [
        SystemMessage("be brief"),
        HumanMessage(content=["look", {"type": "image_url", "image_url": {"url": "data:x"}}]),
        AIMessage(
            "",
            tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}],
            usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        ),
        ToolMessage("2", tool_call_id="c1", artifact=[1, 2], status="success"),
        AIMessage("done"),
    ]
    history.add_messages(sent)
    assert history.messages == sent
    assert history.last(2) == sent[-2:]
    assert module_chatlog.history(history.session_id, "alice", max_messages=1).messages == sent[-1:]


def test_per_session_order_is_log_order_across_partitions_with_concurrent_writers(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Concurrent writers on shared sessions: each session reads back in log order, complete."""
    sessions = [unique("order") for _ in range(48)]
    writers, rounds = 6, 5

    def write(writer: int) -> None:
        for round_ in range(rounds):
            for session in sessions:
                module_chatlog.history(session).add_messages(
                    [HumanMessage(f"w{writer}-r{round_}-a"), AIMessage(f"w{writer}-r{round_}-b")]
                )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected: dict[str, list[str]] = defaultdict(list)
    partitions = set()
    for record in read_log(module_settings):
        if record.event.session_id in sessions:
            payload = record.event.payload
            assert isinstance(payload, MessageAppended)
            expected[record.event.session_id].append(str(payload.content))
            partitions.add(record.partition)
    assert len(partitions) > 6, "sessions should spread over the 12 partitions"
    for session in sessions:
        got = [str(m.content) for m in module_chatlog.history(session).messages]
        assert got == expected[session]
        assert len(got) == writers * rounds * 2
        for writer in range(writers):
            own = [c for c in got if c.startswith(f"w{writer}-")]
            # one writer's calls are sequential, so its messages keep their order
            assert own == [f"w{writer}-r{r}-{x}" for r in range(rounds) for x in "ab"]


def test_reapplying_the_same_offsets_leaves_the_same_state(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """Re-processing records already applied skips every one and changes nothing."""
    session = unique("again")
    history = module_chatlog.history(session)
    history.add_messages([HumanMessage(str(i)) for i in range(20)])
    before = history.messages
    records = [r for r in read_log(module_settings) if r.event.session_id == session]
    projection = RedisProjection(redis_client, module_settings.namespace)
    for _ in range(2):
        result = projection.apply(records)
        assert (result.applied, result.skipped, result.failed) == (0, len(records), [])
    assert history.messages == before


def test_fresh_projection_applies_each_event_once_even_when_fed_twice(
    module_settings: Settings,
    module_chatlog: ChatLog,
    module_projector: Projector,
    redis_client: redis.Redis,
) -> None:
    """Into an empty namespace, a batch fed twice (redelivery) yields each message once."""
    session = unique("twice")
    module_chatlog.history(session).add_messages([HumanMessage(str(i)) for i in range(10)])
    records = [r for r in read_log(module_settings) if r.event.session_id == session]
    namespace = unique("test:fresh")
    projection = RedisProjection(redis_client, namespace)
    try:
        first = projection.apply(records[:6])
        second = projection.apply(records)  # overlaps the first batch
        assert (first.applied, second.applied, second.skipped) == (6, 4, 6)
        raw = redis_client.lrange(projection.keys.messages(session), 0, -1)
        assert [m.content for m in from_stored(raw)] == [str(i) for i in range(10)]
    finally:
        delete_namespace(redis_client, namespace)


def test_clear_removes_earlier_messages_and_later_appends_stay(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """clear() empties the history; messages appended after it are kept."""
    history = module_chatlog.history(unique("clear"))
    history.add_messages([HumanMessage("old"), AIMessage("older")])
    history.clear()
    assert history.messages == []
    history.add_messages([HumanMessage("new")])
    assert without_ids(history.messages) == [HumanMessage("new")]


def test_clear_and_appends_in_one_batch_apply_in_log_order(
    redis_client: redis.Redis,
) -> None:
    """Within one applied batch, a SessionCleared drops only what came before it."""
    from chatlog.schemas import ChatEvent

    namespace = unique("test:batch")
    projection = RedisProjection(redis_client, namespace)
    events = [
        MessageAppended(type="human", content="a"),
        SessionCleared(),
        MessageAppended(type="human", content="b"),
    ]
    records = [LogRecord(3, offset, ChatEvent("s", e)) for offset, e in enumerate(events)]
    try:
        assert projection.apply(records).applied == 3
        raw = redis_client.lrange(projection.keys.messages("s"), 0, -1)
        assert [m.content for m in from_stored(raw)] == ["b"]
        assert redis_client.hget(projection.keys.meta("s"), "count") == b"1"
    finally:
        delete_namespace(redis_client, namespace)


def _topic_size(settings: Settings) -> int:
    return sum(end_offsets(settings, settings.topic).values())


@pytest.mark.parametrize("bad", ["", "x" * 300, "line\nbreak", "\x07bell", 7])
def test_bad_session_ids_publish_nothing(
    module_settings: Settings, module_chatlog: ChatLog, bad: object
) -> None:
    """An invalid session id raises InvalidSessionIdError before anything is published."""
    module_chatlog.producer  # topic exists
    before = _topic_size(module_settings)
    with pytest.raises(InvalidSessionIdError):
        module_chatlog.history(bad).add_messages([HumanMessage("x")])  # type: ignore[arg-type]
    assert _topic_size(module_settings) == before


def test_a_bad_message_in_a_call_publishes_nothing_of_the_call(
    module_settings: Settings, module_chatlog: ChatLog
) -> None:
    """Validation covers the whole call: one bad item means no event at all."""
    history = module_chatlog.history(unique("allornothing"))
    history.producer  # topic exists
    before = _topic_size(module_settings)
    with pytest.raises(InvalidMessageError):
        history.add_messages([HumanMessage("fine"), "not a message"])  # type: ignore[list-item]
    with pytest.raises(MessageSerializationError):
        history.add_messages(
            [HumanMessage("fine"), HumanMessage("x", additional_kwargs={"o": object()})]
        )
    with pytest.raises(MessageTooLargeError):
        history.add_messages([HumanMessage("fine"), HumanMessage("x" * (1024 * 1024 + 1))])
    assert _topic_size(module_settings) == before


def test_read_without_projector_raises_projection_lag_error(
    settings: Settings, chatlog_factory: object
) -> None:
    """Read-your-writes gives up after the read timeout with the lag in the error."""
    with ChatLog(settings.with_(read_timeout_s=0.5)) as chatlog:
        history = chatlog.history("nobody-projects-me")
        history.add_messages([HumanMessage("a"), HumanMessage("b")])
        with pytest.raises(ProjectionLagError, match="behind") as caught:
            history.messages
        assert caught.value.lag == 2


def test_another_process_sees_the_history_eventually(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """A ChatLog that did not write reads what the projector applied."""
    session = unique("other")
    module_chatlog.history(session).add_messages([HumanMessage("hello")])
    module_chatlog.history(session).messages  # wait for the projection
    with ChatLog(module_settings) as other:
        assert without_ids(other.history(session).messages) == [HumanMessage("hello")]


def test_async_twins_append_read_and_clear(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """aadd_messages, aget_messages and aclear behave like their sync twins."""
    history = module_chatlog.history(unique("async"))

    async def scenario() -> None:
        await history.aadd_messages([HumanMessage("one"), AIMessage("two")])
        assert without_ids(await history.aget_messages()) == [HumanMessage("one"), AIMessage("two")]
        await history.aclear()
        assert await history.aget_messages() == []
        await history.aadd_messages([HumanMessage("three")])
        assert without_ids(await history.aget_messages()) == [HumanMessage("three")]

    asyncio.run(scenario())
    assert without_ids(history.messages) == [HumanMessage("three")]


def test_runnable_with_message_history_keeps_the_conversation(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """RunnableWithMessageHistory with a fake model sees earlier turns through chatlog."""
    from chatlog.cli.demo import conversation_chain

    chain = conversation_chain(module_chatlog.get_session_history)
    session = unique("runnable")
    config = {"configurable": {"session_id": session, "user_id": "carol"}}
    first = chain.invoke({"question": "first"}, config=config)
    second = chain.invoke({"question": "second"}, config=config)
    assert first.content == "(turn 1) you said: first"
    assert second.content == "(turn 2) you said: second"
    stored = module_chatlog.history(session, "carol").messages
    assert [m.content for m in stored] == [
        "first",
        "(turn 1) you said: first",
        "second",
        "(turn 2) you said: second",
    ]


def test_end_offsets_of_a_topic_the_broker_does_not_list_are_empty_when_missing_is_ok(
    settings: Settings,
) -> None:
    """The checkpoint topic of a deployment that never used the saver replays as nothing."""
    assert not topic_exists(settings, settings.checkpoint_topic)
    assert end_offsets(settings, settings.checkpoint_topic, missing_ok=True) == {}
    ensure_topic(settings.checkpoint_topic, 2, settings=settings)
    assert topic_exists(settings, settings.checkpoint_topic)
    assert end_offsets(settings, settings.checkpoint_topic, missing_ok=True) == {0: 0, 1: 0}
