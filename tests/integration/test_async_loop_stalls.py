"""The async API never blocks the event loop, the first call of a fresh process included.

Every ``a*`` method of the history, the ``ChatLog`` facade and the LangGraph
saver runs, from a process whose topics do not exist yet, on a loop in
asyncio debug mode (``slow_callback_duration`` 50 ms) beside a heartbeat
task, on both Kafka clients. The test fails when a callback or task step of
the loop:

- calls anything that blocks (blockbuster raises ``BlockingError`` naming it:
  a socket read or connect, ``time.sleep``, a contended lock, file I/O), however
  short, so a 0.2 ms synchronous Redis read is caught as surely as a topic
  admin call; or
- holds the loop for more than 50 ms of the loop thread's own CPU time.

What held the loop is measured, not how long calls take, so a loaded
machine that preempts the process does not fail the test: asyncio's
wall-clock slow-callback reports and the loop thread's stack at each stall
the heartbeat noticed are kept for the failure message (a wall-clock stall
with neither a blocking call nor 50 ms of CPU behind it is the scheduler's).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from blockbuster import blockbuster_ctx
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from chatlog import ChatLog
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector.worker import Projector
from chatlog.schemas.sealing import KeyEncryptionKey
from chatlog.settings import Settings
from tests.helpers import unique

#: The longest a callback may hold the loop (the issue's bound).
STALL_S = 0.05

#: How often the heartbeat task wakes up.
HEARTBEAT_S = 0.005

#: Blocking calls of libraries, made once per process or connection, that are
#: not chatlog's to move (what each reads, and why it is allowed).
THIRD_PARTY_ONE_OFFS = [
    # redis-py reads its own version from the installed metadata (os.stat, file
    # reads) when an async connection is made: once per connection, from disk cache.
    ("redis/utils.py", {"get_lib_version"}),
]


@dataclass
class LoopWatch:
    """What held the loop while a scenario ran.

    Attributes:
        cpu_hogs: Callbacks that used more than :data:`STALL_S` of loop-thread CPU.
        slow_reports: asyncio debug mode's wall-clock "Executing ... took" reports.
        stacks: The loop thread's stack at each stall the heartbeat noticed.
        beats: Heartbeats that ran.
        paused: While set, nothing is recorded (the test's own set-up work).
    """

    cpu_hogs: list[str] = field(default_factory=list)
    slow_reports: list[str] = field(default_factory=list)
    stacks: list[str] = field(default_factory=list)
    beats: int = 0
    paused: bool = False

    def explain(self) -> str:
        """Everything recorded, for a failure message."""
        return "\n".join([
            "the loop was held:", *self.cpu_hogs, "asyncio reported:", *self.slow_reports,
            "the loop thread was at:", *self.stacks,
        ])


class _SlowReports(logging.Handler):
    def __init__(self, watch: LoopWatch) -> None:
        super().__init__(logging.WARNING)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing ") and not self.watch.paused:
            self.watch.slow_reports.append(message)


@contextmanager
def _cpu_per_callback(watch: LoopWatch) -> Iterator[None]:
    """Record every loop callback that used more than STALL_S of the loop thread's CPU."""
    original = asyncio.events.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        start = time.thread_time()
        original(handle)
        used = time.thread_time() - start
        if used > STALL_S and not watch.paused:
            watch.cpu_hogs.append(f"{handle!r} used {used:.3f}s of CPU")

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


def _run_watched(scenario: Callable[[LoopWatch], Coroutine[Any, Any, None]]) -> LoopWatch:
    """Run ``scenario`` in debug mode, with blockbuster, beside a heartbeat."""
    watch = LoopWatch()
    last_beat = time.monotonic()
    loop_thread = threading.get_ident()
    done = threading.Event()

    async def heartbeat() -> None:
        nonlocal last_beat
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            watch.beats += 1
            last_beat = time.monotonic()

    def sample_stalls() -> None:
        sampled = 0.0
        while not done.wait(HEARTBEAT_S):
            beat = last_beat
            if time.monotonic() - beat > STALL_S and beat != sampled and not watch.paused:
                sampled = beat
                frame = sys._current_frames().get(loop_thread)
                if frame is not None:
                    watch.stacks.append("".join(traceback.format_stack(frame)[-6:]))

    async def main() -> None:
        beating = asyncio.create_task(heartbeat())
        try:
            with blockbuster_ctx() as blockbuster:
                for function in blockbuster.functions.values():
                    for filename, names in THIRD_PARTY_ONE_OFFS:
                        function.can_block_in(filename, names)
                await scenario(watch)
        finally:
            beating.cancel()

    reports = _SlowReports(watch)
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(reports)
    sampler = threading.Thread(target=sample_stalls, daemon=True)
    sampler.start()
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = STALL_S
    try:
        with _cpu_per_callback(watch):
            loop.run_until_complete(main())
    finally:
        done.set()
        sampler.join()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        asyncio_log.removeHandler(reports)
    return watch


def test_async_api_never_stalls_the_loop_from_a_fresh_start(
    settings_factory: Callable[..., Settings], kafka_client: str
) -> None:
    """History, ChatLog and saver a* calls (topics not yet created) never hold the loop 50 ms."""
    settings = settings_factory(partitions=2, transport=kafka_client)
    session_id, thread_id = unique("s"), unique("t")
    checkpoint = empty_checkpoint()
    seen: dict[str, Any] = {}

    with ExitStack() as stack:

        def start_projector() -> None:
            stack.enter_context(Projector(settings).running())

        # Made before the loop runs: their constructors read the packaged Avro
        # schemas from disk (sync constructors, not async API calls).
        chatlog = ChatLog(settings)
        saver = ChatLogCheckpointSaver(settings)

        async def scenario(watch: LoopWatch) -> None:
            history = chatlog.history(session_id, user_id="alice")
            # First calls: each creates its topic and bootstraps its producer.
            await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
            config = await saver.aput(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}},
                checkpoint, {"source": "input", "step": 0}, {},
            )
            await saver.aput_writes(config, [("messages", "pending")], "task-1")
            # Starting the projector's threads competes for the GIL; it is set-up,
            # not an API call, so its stalls are not counted.
            watch.paused = True
            await asyncio.to_thread(start_projector)
            await asyncio.sleep(STALL_S)
            watch.paused = False
            seen["messages"] = [m.content for m in await history.aget_messages()]
            found = await saver.aget_tuple(config)
            seen["checkpoint"] = None if found is None else found.checkpoint["id"]
            seen["writes"] = None if found is None else found.pending_writes
            seen["listed"] = [t.checkpoint["id"] async for t in saver.alist(config)]
            await history.aclear()
            seen["cleared"] = await history.aget_messages()
            await saver.adelete_thread(thread_id)
            seen["deleted"] = await saver.aget_tuple(config)
            await saver.aclose()
            await chatlog.aclose()

        watch = _run_watched(scenario)

    assert watch.cpu_hogs == [], watch.explain()
    assert watch.beats > 0
    assert seen == {
        "messages": ["hi", "hello"],
        "checkpoint": checkpoint["id"],
        "writes": [("task-1", "messages", "pending")],
        "listed": [checkpoint["id"]],
        "cleared": [],
        "deleted": None,
    }


def test_encrypted_saver_reads_never_stall_the_loop(
    settings_factory: Callable[..., Settings], projector_factory: Callable[..., Projector]
) -> None:
    """A fresh encrypted saver's a* reads open values (and fetch keys) off the loop."""
    settings = settings_factory(
        partitions=2, encryption_key=KeyEncryptionKey.generate().encoded()
    )
    thread_id = unique("t")
    checkpoint = empty_checkpoint()
    seen: dict[str, Any] = {}
    projector = projector_factory(settings)
    # Written, and projected, before the loop runs: the reader below is another
    # process's saver, holding neither a producer nor any data key yet, so its
    # first read of a sealed value must make both (Kafka round trips).
    with ChatLogCheckpointSaver(settings) as writer:
        config = writer.put(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}},
            checkpoint, {"source": "input", "step": 0}, {},
        )
        writer.put_writes(config, [("messages", "pending")], "task-1")
        assert writer.get_tuple(config) is not None
        # The sync twin names the thread to the sealing serializer too.
        assert list(writer.get_delta_channel_history(config=config, channels=["messages"])) == [
            "messages"
        ]
    reader = ChatLogCheckpointSaver(settings)

    async def scenario(watch: LoopWatch) -> None:
        found = await reader.aget_tuple(config)
        seen["checkpoint"] = None if found is None else found.checkpoint["id"]
        seen["writes"] = None if found is None else found.pending_writes
        seen["metadata"] = None if found is None else found.metadata["source"]
        seen["listed"] = [t.checkpoint["id"] async for t in reader.alist(config)]
        seen["history"] = dict(
            await reader.aget_delta_channel_history(config=config, channels=["messages"])
        )
        await reader.aclose()

    try:
        watch = _run_watched(scenario)
    finally:
        if projector.key_store is not None:
            projector.key_store.close()
    assert watch.cpu_hogs == [], watch.explain()
    assert seen["checkpoint"] == checkpoint["id"]
    assert seen["writes"] == [("task-1", "messages", "pending")]
    assert seen["metadata"] == "input"
    assert seen["listed"] == [checkpoint["id"]]
    assert list(seen["history"]) == ["messages"]
