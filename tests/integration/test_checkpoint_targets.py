"""The checkpoint apply of the SQL and DynamoDB targets, record by record, on real stores.

Records are handed to ``apply_checkpoints`` directly (no broker), so each
test names exactly the batch it applies: a thread too big for one DynamoDB
transaction, redelivery, ownership refusal, a value over DynamoDB's item limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from chatlog import Settings
from chatlog.histories.checkpoint_target_reader import CheckpointReading, open_checkpoint_reader
from chatlog.projector.checkpoint_projection import CheckpointRecord
from chatlog.projector.targets import open_target
from chatlog.projector.targets.protocol import CheckpointTarget
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    ChannelVersion,
    CheckpointEvent,
    CheckpointPayload,
    CheckpointPut,
    PendingWriteValue,
    ThreadDeleted,
    TypedValue,
    WritesPut,
)

START = datetime.now(timezone.utc) - timedelta(hours=1)


class Log:
    """Builds checkpoint records of one partition with growing offsets and event times."""

    def __init__(self) -> None:
        self.offset = 0

    def record(self, thread: str, payload: CheckpointPayload, user: str | None = None
               ) -> CheckpointRecord:
        event = CheckpointEvent(thread, payload, user_id=user,
                                occurred_at=START + timedelta(seconds=self.offset))
        self.offset += 1
        return CheckpointRecord(0, self.offset - 1, event)


def put(index: int, value: bytes = b"v") -> CheckpointPut:
    """Checkpoint ``index`` (ids sort by index), its parent the one before, one channel value."""
    version = f"{index:08}"
    return CheckpointPut(
        checkpoint_ns="",
        checkpoint_id=f"cp-{index:04}",
        checkpoint=TypedValue("msgpack", b"checkpoint"),
        metadata=TypedValue("msgpack", b"metadata"),
        parent_checkpoint_id=f"cp-{index - 1:04}" if index else None,
        channel_versions=(ChannelVersion("ch", version),),
        blobs=(ChannelBlob("ch", version, TypedValue("bytes", value)),),
    )


@pytest.fixture(params=["sqlite", "postgresql", "dynamodb"])
def store(
    request: pytest.FixtureRequest, target_url_factory: Callable[[str], str]
) -> Iterator[tuple[CheckpointTarget, CheckpointReading]]:
    """A fresh target of each kind that holds checkpoints, and the saver's reader of it."""
    url = target_url_factory(str(request.param))
    target = open_target(url, Settings())
    reader = open_checkpoint_reader(url)
    assert isinstance(target, CheckpointTarget) and reader is not None
    yield target, reader
    reader.close()
    target.close()  # type: ignore[attr-defined]  # every CheckpointTarget is a ReadModelTarget


def test_a_thread_larger_than_one_transaction_is_applied_and_deleted_whole(
    store: tuple[CheckpointTarget, CheckpointReading],
) -> None:
    """120 checkpoints with writes in one batch, then their deletion: every item moves."""
    target, reader = store
    log = Log()
    batch = [log.record("big", put(i)) for i in range(120)]
    batch.append(log.record("big", WritesPut("", "cp-0119", "task", writes=(
        PendingWriteValue(0, "ch", TypedValue("bytes", b"w")),))))
    result = target.apply_checkpoints(batch, advance={0: log.offset})
    assert (result.applied, result.failed) == (121, [])
    selection = reader.select("big", checkpoint_ns=None)
    newest_first = [f"cp-{i:04}" for i in range(119, -1, -1)]
    assert [e.checkpoint_id for e in selection.entries] == newest_first
    assert selection.entries[0].values["ch"].data == b"v"
    assert [w.channel for w in selection.entries[0].writes] == ["ch"]
    assert selection.offset == 120
    again = target.apply_checkpoints(batch, advance={0: log.offset})
    assert (again.applied, again.skipped) == (0, 121)
    target.apply_checkpoints([log.record("big", ThreadDeleted())], advance={0: log.offset})
    gone = reader.select("big", checkpoint_ns=None)
    assert (gone.entries, gone.offset) == ([], 121)
    assert target.checkpoint_positions() == {0: 122}


def test_another_users_event_is_refused_and_consumes_its_offset(
    store: tuple[CheckpointTarget, CheckpointReading],
) -> None:
    """The owner's checkpoint stays; the stranger's event is refused, not dead-lettered."""
    target, reader = store
    log = Log()
    mine, theirs = log.record("t", put(0), user="u1"), log.record("t", put(1), user="u2")
    result = target.apply_checkpoints([mine, theirs], advance={0: 2})
    assert (result.applied, result.refused, result.failed) == (1, 1, [])
    selection = reader.select("t", checkpoint_ns="")
    assert ([e.checkpoint_id for e in selection.entries], selection.owner, selection.offset) == (
        ["cp-0000"], "u1", 1)
    assert reader.user_threads("u1", ["t"]).positions == {"t": (0, 1)}
    assert [t for t, _ in reader.user_threads("u1", []).entries] == ["t"]


def test_a_value_over_the_item_limit_is_refused_on_dynamodb_only(
    store: tuple[CheckpointTarget, CheckpointReading],
) -> None:
    """DynamoDB dead-letters a 500 KB channel value; SQL stores it."""
    target, reader = store
    log = Log()
    big = log.record("t", put(0, b"x" * 500_000))
    result = target.apply_checkpoints([big, log.record("t", put(1))], advance={0: 2})
    stored = [e.checkpoint_id for e in reader.select("t", checkpoint_ns="").entries]
    if "dynamodb" in type(target).__name__.lower():
        assert [(r.offset, why.split(":")[0]) for r, why in result.failed] == [
            (0, "ItemTooLargeError")]
        assert stored == ["cp-0001"]
    else:
        assert result.failed == []
        assert stored == ["cp-0001", "cp-0000"]


def test_a_task_write_keeps_its_first_value_and_a_special_write_its_last(
    store: tuple[CheckpointTarget, CheckpointReading],
) -> None:
    """As LangGraph's savers (and the Redis script's HSETNX): index >= 0 first wins, < 0 last."""
    target, reader = store
    log = Log()

    def writes(value: bytes) -> CheckpointPayload:
        return WritesPut("", "cp-0000", "task", writes=(
            PendingWriteValue(0, "ch", TypedValue("bytes", value)),
            PendingWriteValue(-1, "__error__", TypedValue("bytes", value)),
        ))

    batch = [log.record("t", put(0)), log.record("t", writes(b"first"))]
    target.apply_checkpoints(batch, advance={0: 2})
    target.apply_checkpoints([log.record("t", writes(b"second"))], advance={0: 3})
    entry = reader.select("t", checkpoint_ns="").entries[0]
    assert sorted((w.channel, w.value.data) for w in entry.writes) == [
        ("__error__", b"second"), ("ch", b"first")]
