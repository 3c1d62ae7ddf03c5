"""Append -> visible: how long until a message a writer appends shows up in a read.

The writer appends on a steady schedule, one tick of a few milliseconds at a
time, as a threaded app server would: a pool of threads shares one
:class:`EventProducer` and each tick's append is a synchronous ``publish``
(encode, send, wait for acks=all) on whichever thread is free, so the rate is
the schedule's rather than one acknowledgement at a time. Each tick carries
one probe event on a probe session. A reader in a process of its own
(``visibility_reader``) polls that session through the read model reader
until its tracking offset covers the probe; the latency is from the start of
the append call to that read. The projector runs in its own process too, as
in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from chatlog.benchmarks.projector_process import environment
from chatlog.benchmarks.workload import message_text, session_id, user_id
from chatlog.errors import ChatLogError
from chatlog.producers.producer import EventProducer
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings

_TICK_S = 0.005
_PROBE_SESSIONS = 64
#: Appends in flight at once. An acks=all publish takes longer than a tick
#: under load (tens of ms on a busy 2-core machine), so a single writer would
#: lower the rate to one acknowledgement at a time.
WRITERS = 16


@dataclass(frozen=True, slots=True)
class Visibility:
    """Append-to-visible latencies in seconds, the writer's own acks, and the rate it achieved."""

    latencies: list[float]
    #: How long each tick's synchronous publish took (encode, send, acks=all).
    acks: list[float]
    rate: float


def append_to_visible(settings: Settings, rate: int, seconds: float, size: int) -> Visibility:
    """Append ``rate`` messages per second for ``seconds``; time each tick's probe to visible.

    Raises:
        ChatLogError: the reader process failed, or a probe did not become
            visible within 30 s.
        PublishError: an append failed.
    """
    per_tick = max(1, round(rate * _TICK_S))
    texts = [message_text(size, seed) for seed in range(8)]
    reader = _start_reader(settings)
    probes = reader.stdin
    assert probes is not None
    lock = threading.Lock()
    next_tick = 0
    sent = 0
    acks: list[float] = []
    errors: list[BaseException] = []
    try:
        with EventProducer(settings) as producer:
            began = time.monotonic()

            def write() -> None:
                nonlocal next_tick, sent
                try:
                    while not errors:
                        with lock:
                            tick = next_tick
                            next_tick += 1
                        due = tick * _TICK_S
                        if due >= seconds:
                            return
                        # Pace against the schedule, not the last tick, so a slow
                        # append is caught up instead of lowering the rate.
                        delay = began + due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        probe = session_id(9_000_000 + tick % _PROBE_SESSIONS)
                        first = tick * per_tick
                        events = [ChatEvent(probe, MessageAppended("human", texts[tick % 8]),
                                            user_id="bench-probe")]
                        events += [
                            ChatEvent(session_id(first + n), MessageAppended("ai", texts[n % 8]),
                                      user_id=user_id(first + n))
                            for n in range(1, per_tick)
                        ]
                        started = time.monotonic()
                        position = producer.publish(events)[0]
                        acked = time.monotonic() - started
                        line = f"probe {started!r} {position.partition} {position.offset} {probe}\n"
                        with lock:
                            acks.append(acked)
                            sent += len(events)
                            probes.write(line)
                            probes.flush()
                except BaseException as exc:  # re-raised by the calling thread below
                    errors.append(exc)

            writers = [
                threading.Thread(target=write, name=f"bench-visible-writer-{n}")
                for n in range(WRITERS)
            ]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
            elapsed = time.monotonic() - began
        if errors:
            if isinstance(errors[0], BrokenPipeError):
                raise ChatLogError(
                    f"the append -> visible reader failed: {_readline(reader) or 'it exited'}"
                ) from errors[0]
            raise errors[0]
        probes.write("done\n")
        probes.flush()
        reply = _readline(reader)
    finally:
        _stop(reader)
    kind, _, values = reply.partition(" ")
    if kind != "latencies":
        raise ChatLogError(f"the append -> visible reader failed: {reply or 'no answer'}")
    return Visibility([float(v) for v in values.split()], acks, sent / elapsed)


def _start_reader(settings: Settings) -> subprocess.Popen[str]:
    """Start the reader process and wait until it can read."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "chatlog.benchmarks.visibility_reader"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment(settings)},
    )
    line = _readline(reader)
    if line != "ready":
        _stop(reader)
        raise ChatLogError(f"the append -> visible reader did not start: {line!r}")
    return reader


def _readline(reader: subprocess.Popen[str]) -> str:
    assert reader.stdout is not None
    return reader.stdout.readline().strip()


def _stop(reader: subprocess.Popen[str]) -> None:
    """End the reader: it exits once its input ends and its probes are visible, or is killed."""
    try:
        if reader.stdin is not None:
            reader.stdin.close()
    except BrokenPipeError:
        pass  # it has exited already
    try:
        reader.wait(timeout=5)
    except subprocess.TimeoutExpired:
        reader.kill()
        reader.wait(timeout=10)
