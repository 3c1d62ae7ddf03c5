"""Append -> visible: how long until a message a writer appends shows up in a read.

A writer thread appends at a steady rate in ticks of a few milliseconds,
through chatlog's producer (encode, send, wait for acks=all). Each tick
carries one probe event on a probe session; a reader thread polls that
session through the read model reader until its tracking offset covers the
probe, and the latency is from the start of the append call to that read.
The projector runs in its own process, as in production.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from chatlog.benchmarks.workload import message_text, session_id, user_id
from chatlog.histories.read_model import ReadModelReader
from chatlog.producers.producer import EventProducer, LogPosition
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings

_TICK_S = 0.005
_PROBE_SESSIONS = 64


@dataclass(frozen=True, slots=True)
class Visibility:
    """Append-to-visible latencies in seconds, and the rate the writer achieved."""

    latencies: list[float]
    rate: float


def append_to_visible(
    settings: Settings, reader: ReadModelReader, rate: int, seconds: float, size: int
) -> Visibility:
    """Append ``rate`` messages per second for ``seconds``; time each tick's probe to visible."""
    per_tick = max(1, round(rate * _TICK_S))
    texts = [message_text(size, seed) for seed in range(8)]
    pending: dict[int, tuple[float, str, LogPosition]] = {}
    latencies: list[float] = []
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []

    def read_probes() -> None:
        try:
            while writing.is_set() or pending:
                # Every pending probe is checked on each pass: probes on other
                # partitions may become visible out of order.
                for tick, (started, sid, position) in list(pending.items()):
                    snapshot = reader.read(sid, limit=1)
                    if snapshot.partition == position.partition and (
                        snapshot.offset >= position.offset
                    ):
                        latencies.append(time.perf_counter() - started)
                        del pending[tick]
                    elif time.perf_counter() - started > 30:
                        raise TimeoutError(f"probe on {sid} never became visible")
                # 1 ms between passes: finer polling costs the writer CPU (one GIL)
                # and moves the figure by less than its own resolution.
                time.sleep(0.001)
        except BaseException as exc:  # re-raised by the writer thread below
            errors.append(exc)

    reader_thread = threading.Thread(target=read_probes, name="bench-visible-reader")
    reader_thread.start()
    sent = 0
    with EventProducer(settings) as producer:
        try:
            began = time.perf_counter()
            tick = 0
            while time.perf_counter() - began < seconds and not errors:
                probe = session_id(9_000_000 + tick % _PROBE_SESSIONS)
                events = [ChatEvent(probe, MessageAppended("human", texts[tick % 8]),
                                    user_id="bench-probe")]
                events += [
                    ChatEvent(session_id(sent + n), MessageAppended("ai", texts[n % 8]),
                              user_id=user_id(sent + n))
                    for n in range(per_tick - 1)
                ]
                started = time.perf_counter()
                positions = producer.publish(events)
                pending[tick] = (started, probe, positions[0])
                sent += len(events)
                tick += 1
                # Pace against the schedule, not the last tick, so a slow tick
                # is caught up instead of lowering the rate.
                delay = began + tick * _TICK_S - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            elapsed = time.perf_counter() - began
        finally:
            writing.clear()
            reader_thread.join(timeout=60)
    if errors:
        raise errors[0]
    return Visibility(latencies, sent / elapsed)
