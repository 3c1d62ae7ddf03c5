"""Conditional-append verdicts of the SQL and DynamoDB targets: kept with the session, an hour."""

from __future__ import annotations

from chatlog.keys import VERDICT_APPLIED, VERDICT_CONFLICT
from chatlog.projector.changes import Change
from chatlog.projector.protocol import OP_APPEND_IF, VERDICT_TTL_MS, pack_fields
from chatlog.projector.targets.session_fold import (
    fold_batch,
    loaded_placeholders,
    session_from,
    state_json,
    stored_verdicts,
)

NOW = 1_700_000_000_000


def conditional(offset: int, expected: int, key: str) -> Change:
    arg = pack_fields([str(expected).encode(), key.encode(), b'{"type":"human"}'])
    return Change(0, offset, "s", "u", NOW - 1000, OP_APPEND_IF, arg)


def test_verdicts_persist_with_the_state_and_expire_after_an_hour() -> None:
    """A verdict survives the next batch within the hour and is pruned after it."""
    first = fold_batch([conditional(0, 0, "a")], {}, {}, default_ttl_ms=0, now_ms=NOW)
    done = first.sessions["s"]
    assert done.verdicts == {"0": [VERDICT_APPLIED, NOW]}
    state = state_json(done.session, done.verdicts)
    assert stored_verdicts(state) == {"0": [VERDICT_APPLIED, NOW]}

    loaded = {"s": session_from(state, loaded_placeholders(1))}
    later = NOW + VERDICT_TTL_MS - 1
    second = fold_batch([conditional(1, 0, "b")], loaded, {}, default_ttl_ms=0,
                        verdicts={"s": stored_verdicts(state)}, now_ms=later)
    assert second.result.conflicts == 1 and second.result.applied == 0
    assert second.sessions["s"].verdicts == {
        "0": [VERDICT_APPLIED, NOW], "1": [VERDICT_CONFLICT + "1", later]
    }
    state = state_json(second.sessions["s"].session, second.sessions["s"].verdicts)

    loaded = {"s": session_from(state, loaded_placeholders(1))}
    third = fold_batch([conditional(2, 1, "c")], loaded, {}, default_ttl_ms=0,
                       verdicts={"s": stored_verdicts(state)}, now_ms=NOW + VERDICT_TTL_MS)
    assert third.sessions["s"].verdicts == {
        "1": [VERDICT_CONFLICT + "1", later], "2": [VERDICT_APPLIED, NOW + VERDICT_TTL_MS]
    }
