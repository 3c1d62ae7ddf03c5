"""A forged checkpoint event travels Kafka -> projector -> Redis and still runs no code on read."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import EXT_CONSTRUCTOR_POS_ARGS

from chatlog import Settings
from chatlog.errors import UnsafeCheckpointValueError
from chatlog.histories.checkpoint_serde import CheckpointSerializer
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.producers.producer import EncodedEvent, EventProducer
from chatlog.projector import Projector
from chatlog.schemas.checkpoint_codec import CONTENT_TYPE, CheckpointCodec
from chatlog.schemas.checkpoint_events import (
    ChannelBlob,
    ChannelVersion,
    CheckpointEvent,
    CheckpointPut,
    TypedValue,
)


@dataclasses.dataclass
class Ticket:
    """A state value of the application's own type."""

    number: int


@pytest.fixture
def saver(
    module_settings: Settings, module_projector: Projector
) -> Iterator[ChatLogCheckpointSaver]:
    """A default saver (strict serializer) on the module's log."""
    with ChatLogCheckpointSaver(module_settings) as made:
        yield made


def _forge(settings: Settings, thread_id: str, blob: TypedValue) -> str:
    """Publish a checkpoint whose channel value is ``blob``, as an attacker with topic access."""
    strict = CheckpointSerializer()
    stripped: dict[str, Any] = dict(empty_checkpoint())
    stripped.pop("channel_values")
    kind, data = strict.dumps_typed(stripped)
    meta_kind, meta = strict.dumps_typed({"source": "input", "step": -1})
    put = CheckpointPut(
        checkpoint_ns="",
        checkpoint_id=str(stripped["id"]),
        checkpoint=TypedValue(kind, data),
        metadata=TypedValue(meta_kind, meta),
        channel_versions=(ChannelVersion("messages", "1"),),
        blobs=(ChannelBlob("messages", "1", blob),),
    )
    value = CheckpointCodec().encode(CheckpointEvent(thread_id, put))
    headers = [("event-type", b"CheckpointPut"), ("content-type", CONTENT_TYPE.encode())]
    record = EncodedEvent(thread_id.encode(), value, headers)
    with EventProducer(settings) as producer:
        producer.send_encoded(settings.checkpoint_topic, [record])
    return str(stripped["id"])


def test_a_forged_checkpoint_naming_os_system_is_refused_on_read(
    saver: ChatLogCheckpointSaver, module_settings: Settings, tmp_path: Path
) -> None:
    """The finding's proof end to end: get_tuple raises a typed error and the command never runs."""
    marker = tmp_path / "ran"
    thread_id = f"forged-{uuid.uuid4().hex[:8]}"
    call = ormsgpack.packb(["os", "system", [f"touch {marker}"]])
    payload = ormsgpack.packb([ormsgpack.Ext(EXT_CONSTRUCTOR_POS_ARGS, call)])
    _forge(module_settings, thread_id, TypedValue("msgpack", payload))
    config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    deadline = time.monotonic() + 30
    while not saver.reader.select(thread_id, checkpoint_ns="", checkpoint_id=None, limit=1).entries:
        assert time.monotonic() < deadline, "the forged checkpoint was never projected"
        time.sleep(0.05)
    with pytest.raises(UnsafeCheckpointValueError, match=r"os\.system"):
        saver.get_tuple(config)
    with pytest.raises(UnsafeCheckpointValueError):
        list(saver.list(config))
    assert not marker.exists()


def test_an_application_type_reads_back_once_allowlisted(saver: ChatLogCheckpointSaver) -> None:
    """A saver's own write of an unlisted type is refused too; with_allowlist lets it through."""
    thread_id = f"ticket-{uuid.uuid4().hex[:8]}"
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"ticket": Ticket(7)}
    checkpoint["channel_versions"] = {"ticket": "1"}
    config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    saver.put(config, checkpoint, {"source": "input", "step": -1}, {"ticket": "1"})
    with pytest.raises(UnsafeCheckpointValueError, match="with_allowlist"):
        saver.get_tuple(config)
    widened = saver.with_allowlist([(Ticket.__module__, "Ticket")])
    found = widened.get_tuple(config)
    assert found is not None
    assert found.checkpoint["channel_values"] == {"ticket": Ticket(7)}
