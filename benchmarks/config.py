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
        repeats: Times the throughput runs are repeated (live projector and
            rebuild alternating which goes first, each next to its raw
            baselines measured again): the spread of a ratio comes from them.
        append_shapes: ``(messages per add_messages call, calls)`` of each
            append call shape, each call next to the raw producer's same call.
        blocks: Blocks the interleaved samples of one measure are split into,
            each block a run of the spread.
        sync_samples: Single-message appends timed (and as many raw sends).
        read_samples: Reads timed for each history.
        read_messages: Messages in the session that is read.
        own_write_samples: Writes read back by the same process, per kind.
        idle_seconds: How long the idle projector's CPU is watched.
        visible_rate: Messages per second the steady writer appends.
        visible_seconds: How long the steady writer runs.
        memory_sessions: Session counts at which the projector's RSS is taken,
            each after as many events as the larger count.
        peer_appends: Appends timed on ``KafkaChatMessageHistory``.
        peer_reads: Reads timed on ``KafkaChatMessageHistory``.
        cluster_sessions: Sessions of the Redis Cluster vs standalone step,
            ``read_messages`` messages each: the projector applies them to a
            3-primary cluster and to a standalone redis-server, then their
            reads are timed on both.
        encryption_events: Events the projector applies with encryption on, and
            again with it off, in the encryption step.
    """

    quick: bool
    message_bytes: int = 500
    throughput_events: int = 100_000
    throughput_sessions: int = 10_000
    repeats: int = 3
    append_shapes: tuple[tuple[int, int], ...] = ((2, 2_000), (10, 1_000), (100, 300))
    blocks: int = 5
    sync_samples: int = 2_000
    read_samples: int = 3_000
    read_messages: int = 50
    own_write_samples: int = 500
    idle_seconds: float = 10.0
    visible_rate: int = 5_000
    visible_seconds: float = 20.0
    memory_sessions: tuple[int, int] = (10_000, 100_000)
    peer_appends: int = 200
    peer_reads: int = 2
    cluster_sessions: int = 2_000
    encryption_events: int = 100_000

    @classmethod
    def full(cls) -> BenchConfig:
        """The sizes the issue's targets are stated for."""
        return cls(quick=False)

    @classmethod
    def smoke(cls) -> BenchConfig:
        """Sizes for ``--quick``: every measure, in about a minute and a half on 2 cores."""
        return cls(
            quick=True,
            throughput_events=10_000,
            throughput_sessions=1_000,
            repeats=2,
            append_shapes=((2, 150), (10, 60), (100, 15)),
            blocks=3,
            sync_samples=150,
            read_samples=300,
            own_write_samples=40,
            idle_seconds=3.0,
            visible_rate=1_000,
            visible_seconds=3.0,
            memory_sessions=(500, 5_000),
            peer_appends=20,
            peer_reads=1,
            cluster_sessions=100,
            encryption_events=5_000,
        )


#: The DeprecationWarning langchain-community raises on import; it is being
#: sunset, but users still pick its histories, so the benchmark (and the
#: import tests) compare against them with only this warning silenced.
SUNSET_NOTICE = r"`langchain-community` is being sunset"
