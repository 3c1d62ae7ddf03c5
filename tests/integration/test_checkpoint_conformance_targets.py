"""LangGraph's conformance suite passes with the saver reading a SQL read model.

The same suite as on Redis (:mod:`tests.integration.test_checkpoint_conformance`),
with ``CHATLOG_READ_MODEL`` naming a SQLite file or a PostgreSQL database and a
target projector (``chatlog projector run --target URL``) applying the
checkpoint topic there; no Redis read model is involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate

from chatlog import Settings
from chatlog.histories.checkpoint_target_reader import TargetCheckpointReader
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector.targets import open_target
from chatlog.projector.targets.live import TargetProjector
from tests.conformance import assert_every_capability_passed


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "dynamodb"])
def test_every_conformance_capability_passes_on_a_target(
    kind: str,
    settings_factory: Callable[..., Settings],
    target_url_factory: Callable[[str], str],
) -> None:
    """All eight capabilities pass with every saver read served by the target."""
    url = target_url_factory(kind)
    settings = settings_factory(read_model=url, partitions=2)
    projector = TargetProjector(settings, open_target(url, settings))

    @checkpointer_test(name=f"ChatLogCheckpointSaver on {kind}")
    async def chatlog_saver() -> AsyncGenerator[ChatLogCheckpointSaver, None]:
        saver = ChatLogCheckpointSaver(settings)
        assert isinstance(saver.reader, TargetCheckpointReader)
        try:
            yield saver
        finally:
            await saver.aclose()

    with projector.running():
        report = asyncio.run(validate(chatlog_saver))
    passed = assert_every_capability_passed(report)
    print(f"\n{kind}: conformance tests passed per capability: {passed}")
    assert projector.dead_lettered == 0
