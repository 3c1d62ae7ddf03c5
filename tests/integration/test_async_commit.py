"""Offsets are committed without waiting after each batch, and for sure at a stop or a revoke.

The stop is covered on both clients by ``test_consumer_transports``; here the revoke.
"""

from __future__ import annotations

from kafka import TopicPartition

from chatlog.producers.rebalance import RebalanceListener


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
