"""Benchmark sizes: the full run and the ``--quick`` smoke run that fits in CI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """How big each benchmark is.

    Attributes:
        quick: Whether these are the scaled-down smoke sizes.
        message_bytes: Content size of every benchmark message.
        throughput_events: Events published before the projector and the raw
            consumer read them back.
        throughput_sessions: Sessions those events are spread over.
        append_events: Events of the batched append benchmark.
        append_batch: Messages per ``add_messages`` call in the batched benchmark.
        sync_samples: Single-message appends timed (and as many raw sends).
        read_samples: Reads timed for each history.
        read_messages: Messages in the session that is read.
        visible_rate: Messages per second the steady writer appends.
        visible_seconds: How long the steady writer runs.
        memory_sessions: Session counts at which the projector's RSS is taken,
            each after as many events as the larger count.
        peer_appends: Appends timed on ``KafkaChatMessageHistory``.
        peer_reads: Reads timed on ``KafkaChatMessageHistory``.
    """

    quick: bool
    message_bytes: int = 500
    throughput_events: int = 200_000
    throughput_sessions: int = 10_000
    append_events: int = 50_000
    append_batch: int = 100
    sync_samples: int = 2_000
    read_samples: int = 3_000
    read_messages: int = 50
    visible_rate: int = 5_000
    visible_seconds: float = 20.0
    memory_sessions: tuple[int, int] = (10_000, 100_000)
    peer_appends: int = 200
    peer_reads: int = 3

    @classmethod
    def full(cls) -> BenchConfig:
        """The sizes the issue's targets are stated for."""
        return cls(quick=False)

    @classmethod
    def smoke(cls) -> BenchConfig:
        """Sizes for ``--quick``: every measure, in well under a minute."""
        return cls(
            quick=True,
            throughput_events=20_000,
            throughput_sessions=2_000,
            append_events=5_000,
            sync_samples=200,
            read_samples=300,
            visible_rate=1_000,
            visible_seconds=3.0,
            memory_sessions=(1_000, 10_000),
            peer_appends=20,
            peer_reads=1,
        )


#: The DeprecationWarning langchain-community raises on import; it is being
#: sunset, but users still pick its histories, so the benchmark (and the
#: import tests) compare against them with only this warning silenced.
SUNSET_NOTICE = r"`langchain-community` is being sunset"
