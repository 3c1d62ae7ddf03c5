"""The async API never blocks the event loop, the first call of a fresh process included.

Every ``a*`` method of the history, the ``ChatLog`` facade and the LangGraph
saver runs on a loop in asyncio debug mode with ``slow_callback_duration``
at 50 ms, beside a heartbeat task. asyncio then reports every callback or
task step that held the loop longer, naming it; the test fails on any
report. The workload is a few small events, so what is measured is what the
loop was blocked by (a synchronous Redis read, a topic admin call, a
producer bootstrap, a metadata fetch, a flush), not how long the calls take.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint

from chatlog import ChatLog
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector.worker import Projector
from chatlog.settings import Settings
from tests.helpers import unique

#: The longest a callback may hold the loop (the issue's bound).
STALL_S = 0.05

#: How often the heartbeat task wakes up.
HEARTBEAT_S = 0.005


class _SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's "Executing <callback> took N seconds" reports.

    While :attr:`paused`, reports are dropped: the test's own set-up work
    (starting a projector's threads) is not the API under test.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []
        self.paused = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing ") and not self.paused:
            self.reports.append(message)


Scenario = Callable[[_SlowCallbacks], Coroutine[Any, Any, None]]


def _run_watched(scenario: Scenario) -> tuple[list[str], list[str], int]:
    """Run ``scenario`` in debug mode beside a heartbeat.

    Returns asyncio's slow-callback reports, the loop thread's stack at each
    stall the heartbeat noticed (what the loop was doing, for the failure
    message), and the number of beats.
    """
    beats = 0
    last_beat = time.monotonic()
    loop_thread = threading.get_ident()
    stacks: list[str] = []
    done = threading.Event()
    slow = _SlowCallbacks()

    async def heartbeat() -> None:
        nonlocal beats, last_beat
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            beats += 1
            last_beat = time.monotonic()

    def sample_stalls() -> None:
        sampled = 0.0
        while not done.wait(HEARTBEAT_S):
            beat = last_beat
            if time.monotonic() - beat > STALL_S and beat != sampled and not slow.paused:
                sampled = beat
                frame = sys._current_frames().get(loop_thread)
                if frame is not None:
                    stacks.append("".join(traceback.format_stack(frame)[-6:]))

    async def main() -> None:
        beating = asyncio.create_task(heartbeat())
        try:
            await scenario(slow)
        finally:
            beating.cancel()

    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(slow)
    sampler = threading.Thread(target=sample_stalls, daemon=True)
    sampler.start()
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = STALL_S
    try:
        loop.run_until_complete(main())
    finally:
        done.set()
        sampler.join()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        asyncio_log.removeHandler(slow)
    return slow.reports, stacks, beats


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

        async def scenario(watch: _SlowCallbacks) -> None:
            chatlog = ChatLog(settings)
            saver = ChatLogCheckpointSaver(settings)
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

        reports, stacks, beats = _run_watched(scenario)

    assert reports == [], "\n".join(["the loop was held; where it was:", *stacks])
    assert beats > 0
    assert seen == {
        "messages": ["hi", "hello"],
        "checkpoint": checkpoint["id"],
        "writes": [("task-1", "messages", "pending")],
        "listed": [checkpoint["id"]],
        "cleared": [],
        "deleted": None,
    }
