"""The projector on the optional confluent-kafka transport: same apply, commits and dead letters."""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.producers.confluent_consumer import ConfluentConsumer
from chatlog.producers.producer import EncodedEvent
from chatlog.projector import Projector
from chatlog.projector.dead_letter import HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON
from chatlog.projector.lag import consumer_lag
from tests.helpers import eventually, read_topic, unique

SETTINGS_OVERRIDES = {"partitions": 3, "transport": "confluent"}


def test_confluent_projector_is_the_one_the_settings_choose(module_projector: Projector) -> None:
    """CHATLOG_TRANSPORT=confluent runs the worker on confluent-kafka, not kafka-python."""
    assert isinstance(module_projector._consumer, ConfluentConsumer)
    assert module_projector.assignment()


def test_confluent_projector_makes_appended_messages_readable(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Messages appended through the ChatLog are read back in order once projected."""
    history = module_chatlog.history(unique("s"), unique("u"))
    messages = [HumanMessage(f"m{i}") if i % 2 == 0 else AIMessage(f"m{i}") for i in range(30)]
    history.add_messages(messages)
    assert history.messages == messages


def test_confluent_projector_dead_letters_a_poison_record_and_applies_its_neighbours(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """Undecodable bytes go to the dead-letter topic with their coordinates; the rest applies."""
    session = unique("s")
    history = module_chatlog.history(session, unique("u"))
    history.add_messages([HumanMessage("before")])
    poison = module_chatlog.producer.send_encoded(
        module_settings.topic, [EncodedEvent(session.encode(), b"not an avro event", [])]
    )[0]
    history.add_messages([HumanMessage("after")])
    assert history.messages == [HumanMessage("before"), HumanMessage("after")]

    def letter() -> dict[str, bytes] | None:
        for record in read_topic(module_settings, module_settings.dlq_topic):
            head = {k: bytes(v) for k, v in record.headers}
            coordinates = (int(head[HEADER_PARTITION]), int(head[HEADER_OFFSET]))
            if coordinates == (poison.partition, poison.offset):
                return head
        return None

    eventually(lambda: letter() is not None)
    head = letter()
    assert head is not None
    assert head[HEADER_REASON].startswith(b"undecodable")


def test_confluent_projector_commits_after_apply_and_a_restart_resumes_there(
    settings_factory: Callable[..., Settings], chatlog_factory: Callable[[Settings], ChatLog]
) -> None:
    """Committed offsets reach the end once applied; a new worker applies only what came after."""
    settings = settings_factory(partitions=2, transport="confluent")
    chatlog = chatlog_factory(settings)
    history = chatlog.history(unique("s"), unique("u"))
    chatlog.producer  # the topics exist before the group joins
    with Projector(settings).running() as first:
        history.add_messages([HumanMessage("one"), AIMessage("two"), HumanMessage("three")])
        assert len(history.messages) == 3
        eventually(lambda: consumer_lag(settings).total == 0)
    assert first.stats.applied == 3
    history.add_messages([AIMessage("four"), HumanMessage("five")])
    with Projector(settings).running() as second:
        eventually(lambda: second.stats.applied == 2)
        assert len(history.messages) == 5
        eventually(lambda: consumer_lag(settings).total == 0)
    assert (second.stats.applied, second.stats.skipped) == (2, 0)
