"""CHATLOG_FETCH_MAX_WAIT_MS reaches the projector's consumer on both transports."""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.projector import Projector
from tests.helpers import unique


def test_a_longer_fetch_wait_is_used_and_messages_still_project(
    kafka_client: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    projector_factory: Callable[..., Projector],
) -> None:
    """A 300 ms wait is what the consumer runs with, and reads still see writes."""
    settings = settings_factory(partitions=2, fetch_max_wait_ms=300, transport=kafka_client)
    chatlog = chatlog_factory(settings)
    chatlog.producer  # creates the topics before the group joins
    projector = projector_factory(settings)
    consumer = projector.consumer
    if kafka_client == "kafka-python":
        assert consumer.config["fetch_max_wait_ms"] == 300
    history = chatlog.history(unique("s"), unique("u"))
    messages = [HumanMessage("one"), AIMessage("two"), HumanMessage("three")]
    for message in messages:
        history.add_messages([message])
    assert history.messages == messages
