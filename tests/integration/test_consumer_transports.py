"""The projector's consumer transports, one suite run on each Kafka client.

Same apply, commits and dead letters on kafka-python and confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaConsumer
from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.producers.confluent_consumer import ConfluentConsumer
from chatlog.producers.producer import EncodedEvent
from chatlog.projector import Projector
from chatlog.projector.dead_letter import (
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_REASON,
    HEADER_TOPIC,
)
from chatlog.projector.lag import consumer_lag
from chatlog.settings import TRANSPORTS
from tests.helpers import eventually, read_topic, unique, without_ids

SETTINGS_OVERRIDES = {"partitions": 3}

#: Runs a test once per Kafka client, each on its own module-wide topic and projector.
per_client = pytest.mark.parametrize(
    "module_settings",
    [{"transport": t} for t in TRANSPORTS],
    ids=TRANSPORTS,
    indirect=True,
    scope="module",
)


@per_client
def test_the_settings_choose_the_consumer(
    module_settings: Settings, module_projector: Projector
) -> None:
    """CHATLOG_TRANSPORT runs the worker on the chosen client's consumer."""
    expected = {"kafka-python": KafkaConsumer, "confluent": ConfluentConsumer}
    assert isinstance(module_projector.consumer, expected[module_settings.transport])
    assert module_projector.assignment()


@per_client
def test_appended_messages_are_readable_once_projected(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Messages appended through the ChatLog are read back in order once projected."""
    history = module_chatlog.history(unique("s"), unique("u"))
    messages = [HumanMessage(f"m{i}") if i % 2 == 0 else AIMessage(f"m{i}") for i in range(30)]
    history.add_messages(messages)
    assert history.messages == messages


@per_client
def test_a_poison_record_is_dead_lettered_and_its_neighbours_apply(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Undecodable bytes go to the dead-letter topic as they were, with their coordinates."""
    session = unique("s")
    history = module_chatlog.history(session, unique("u"))
    history.add_messages([HumanMessage("before")])
    poison = module_chatlog.producer.send_encoded(
        module_settings.topic, [EncodedEvent(session.encode(), b"not an avro event", [])]
    )[0]
    history.add_messages([HumanMessage("after")])
    assert without_ids(history.messages) == [HumanMessage("before"), HumanMessage("after")]

    def letter() -> tuple[bytes, dict[str, bytes]] | None:
        for record in read_topic(module_settings, module_settings.dlq_topic):
            head = {k: bytes(v) for k, v in record.headers}
            coordinates = (int(head[HEADER_PARTITION]), int(head[HEADER_OFFSET]))
            if coordinates == (poison.partition, poison.offset):
                return bytes(record.value), head
        return None

    eventually(lambda: letter() is not None)
    found = letter()
    assert found is not None
    value, head = found
    assert value == b"not an avro event"
    assert head[HEADER_TOPIC] == module_settings.topic.encode()
    assert head[HEADER_REASON].startswith(b"undecodable")


def test_commits_follow_the_apply_and_a_restart_resumes_there(
    kafka_client: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
) -> None:
    """Right after stop returns, everything applied is committed; a new worker resumes there."""
    settings = settings_factory(partitions=2, transport=kafka_client)
    chatlog = chatlog_factory(settings)
    history = chatlog.history(unique("s"), unique("u"))
    chatlog.producer  # the topics exist before the group joins
    with Projector(settings).running() as first:
        history.add_messages([HumanMessage("one"), AIMessage("two"), HumanMessage("three")])
        assert len(history.messages) == 3
    assert consumer_lag(settings).total == 0
    assert (first.stats.applied, first.stats.commits_failed) == (3, 0)
    history.add_messages([AIMessage("four"), HumanMessage("five")])
    with Projector(settings).running() as second:
        eventually(lambda: second.stats.applied == 2)
        assert len(history.messages) == 5
        eventually(lambda: consumer_lag(settings).total == 0)
    assert (second.stats.applied, second.stats.skipped) == (2, 0)
