"""LangGraph's checkpointer conformance suite, judged the same way for every store.

The Redis saver (:mod:`tests.integration.test_checkpoint_conformance`) and the
saver on each SQL or DynamoDB target
(:mod:`tests.integration.test_checkpoint_conformance_targets`) run the one
suite; this module holds what a passing report looks like.
"""

from __future__ import annotations

from typing import Any

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


def assert_every_capability_passed(report: Any) -> dict[str, int]:
    """Assert the report has every capability, detected, with all of its tests passed.

    Returns the tests passed per capability (equal to :data:`SUITE_SIZES`).
    """
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert failures == {}
    assert set(report.results) == {capability.value for capability in ALL_CAPABILITIES}
    assert all(result.detected and result.tests_failed == 0 for result in report.results.values())
    passed = {name: result.tests_passed for name, result in report.results.items()}
    assert passed == SUITE_SIZES
    return passed
