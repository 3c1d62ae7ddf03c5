"""Offsets are committed without waiting after each batch, and for sure at a stop or a revoke."""

from __future__ import annotations

from collections.abc import Callable

from kafka import TopicPartition
from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.producers.rebalance import RebalanceListener
from chatlog.projector import Projector
from chatlog.projector.lag import consumer_lag
from tests.helpers import unique


def test_a_stopped_projector_has_committed_everything_it_applied(
    kafka_client: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
) -> None:
    """Right after stop returns, the group's committed offsets are at the end of the log."""
    settings = settings_factory(partitions=2, transport=kafka_client)
    chatlog = chatlog_factory(settings)
    history = chatlog.history(unique("s"), unique("u"))
    chatlog.producer  # the topics exist before the group joins
    with Projector(settings).running() as projector:
        history.add_messages([HumanMessage("one"), AIMessage("two"), HumanMessage("three")])
        assert len(history.messages) == 3
    assert consumer_lag(settings).total == 0
    assert (projector.stats.applied, projector.stats.commits_failed) == (3, 0)


def test_the_rebalance_listener_lets_the_worker_commit_before_recording_a_revoke() -> None:
    """before_revoke hears the revoked partitions before the change is reported."""
    heard: list[tuple[str, set[TopicPartition]]] = []
    listener = RebalanceListener(
        lambda kind, partitions: heard.append((kind, partitions)),
        before_revoke=lambda partitions: heard.append(("commit", partitions)),
    )
    revoked = {TopicPartition("t", 0), TopicPartition("t", 1)}
    listener.on_partitions_revoked(revoked)
    assert heard == [("commit", revoked), ("revoked", revoked)]
