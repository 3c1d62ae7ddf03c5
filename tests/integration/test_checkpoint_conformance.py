"""The official LangGraph checkpointer conformance suite passes against ChatLogCheckpointSaver.

``langgraph-checkpoint-conformance`` drives every base capability (put,
put_writes, get_tuple, list, delete_thread) and every extended one
(delete_for_runs, copy_thread, prune) through the async API, on the real
broker and Redis with a running projector.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from langgraph.checkpoint.conformance import checkpointer_test, validate

from chatlog import Settings
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector import Projector
from tests.conformance import assert_every_capability_passed

SETTINGS_OVERRIDES = {"partitions": 2}


def test_every_conformance_capability_passes(
    module_settings: Settings, module_projector: Projector
) -> None:
    """All eight capabilities are detected and every one of their tests passes."""

    @checkpointer_test(name="ChatLogCheckpointSaver")
    async def chatlog_saver() -> AsyncGenerator[ChatLogCheckpointSaver, None]:
        saver = ChatLogCheckpointSaver(module_settings)
        try:
            yield saver
        finally:
            await saver.aclose()

    report = asyncio.run(validate(chatlog_saver))
    passed = assert_every_capability_passed(report)
    print(f"\nconformance tests passed per capability: {passed}")
