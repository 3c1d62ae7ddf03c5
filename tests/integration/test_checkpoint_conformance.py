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
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

from chatlog import Settings
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector import Projector

SETTINGS_OVERRIDES = {"partitions": 2}

#: How many tests langgraph-checkpoint-conformance 0.0.2 has per capability.
SUITE_SIZES = {
    "put": len(test_put.ALL_PUT_TESTS),
    "put_writes": len(test_put_writes.ALL_PUT_WRITES_TESTS),
    "get_tuple": len(test_get_tuple.ALL_GET_TUPLE_TESTS),
    "list": len(test_list.ALL_LIST_TESTS),
    "delete_thread": len(test_delete_thread.ALL_DELETE_THREAD_TESTS),
    "delete_for_runs": len(test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS),
    "copy_thread": len(test_copy_thread.ALL_COPY_THREAD_TESTS),
    "prune": len(test_prune.ALL_PRUNE_TESTS),
}


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
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert failures == {}
    assert set(report.results) == {capability.value for capability in ALL_CAPABILITIES}
    passed = {name: result.tests_passed for name, result in report.results.items()}
    print(f"\nconformance tests passed per capability: {passed}")
    assert passed == SUITE_SIZES
    assert all(result.detected and result.tests_failed == 0 for result in report.results.values())
