"""What encryption costs: appends and projection with ``CHATLOG_ENCRYPTION_KEY`` on vs off.

Both sides run in the same run on the same broker and Redis, with the same
messages: the batched append through :class:`~chatlog.histories.ChatLog`,
and the live projector over a topic seeded with the same events, sealed or
not (:func:`~chatlog.benchmarks.throughput.projector_rate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chatlog.benchmarks import append, throughput
from chatlog.benchmarks.workload import encode_all, message_events, seed_topic, session_id
from chatlog.histories.store import ChatLog
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.schemas.sealing import KeyEncryptionKey
from chatlog.settings import Settings


@dataclass(frozen=True, slots=True)
class EncryptionCost:
    """Append and projection rates with encryption off (plain) and on (sealed)."""

    append_plain: float
    append_sealed: float
    project_plain: float
    project_sealed: float


def encrypted(settings: Settings) -> Settings:
    """``settings`` with a fresh key-encryption key."""
    return settings.with_(encryption_key=KeyEncryptionKey.generate().encoded())


def encryption_cost(
    plain: Settings,
    sealed: Settings,
    *,
    events: int,
    sessions: int,
    batch: int,
    size: int,
    project_events: int | None = None,
) -> EncryptionCost:
    """Measure appends, then projection, on ``plain`` and on ``sealed`` (encryption on)."""
    appended: list[float] = []
    for settings in (plain, sealed):
        with ChatLog(settings.with_(topic=f"{settings.topic}-append")) as chatlog:
            appended.append(_append_rate(chatlog, events, batch, size))
    # The projector is timed from its first batch to its last, so it needs
    # several batches: as many events as the main projector measurement.
    projected_count = project_events or events
    projected: list[float] = []
    for settings in (plain, sealed):
        ensure_topic(
            settings.topic, settings.partitions, settings.replication_factor, settings=settings
        )
        with EventProducer(settings) as producer:
            records = encode_all(message_events(projected_count, sessions, size), producer)
        seed_topic(settings, records)
        projected.append(throughput.projector_rate(settings, projected_count).per_second)
    return EncryptionCost(appended[0], appended[1], projected[0], projected[1])


def _append_rate(chatlog: ChatLog, total: int, batch: int, size: int) -> float:
    """Messages per second of ``total`` messages in ``add_messages`` calls of ``batch``."""
    messages = append.conversation(batch, size)
    calls = max(1, total // batch)
    started = time.perf_counter()
    for call in range(calls):
        chatlog.history(session_id(call), f"user-{call % 100}").add_messages(messages)
    return calls * batch / (time.perf_counter() - started)
