"""Bytes on the checkpoint log per super-step of a 50-turn create_agent conversation.

The same conversation (a fake chat model answering ~200 characters per turn)
runs once with LangGraph's default ``messages`` channel (every checkpoint
carries the whole message list) and once with a ``DeltaChannel`` (checkpoints
carry only the turn's writes, plus a snapshot every 100 updates). The figures
are the README's; the test asserts what they show.
"""

from __future__ import annotations

import statistics
from typing import Annotated, Any

from langchain.agents import AgentState, create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import _messages_delta_reducer

from chatlog import Settings
from chatlog.projector import Projector
from tests.helpers import read_topic, unique

SETTINGS_OVERRIDES = {"partitions": 2}
TURNS = 50


class DeltaAgentState(AgentState):  # type: ignore[type-arg]
    """create_agent's state with ``messages`` on a DeltaChannel (LangGraph's own reducer)."""

    messages: Annotated[list[Any], DeltaChannel(_messages_delta_reducer)]  # type: ignore[misc]


def _conversation(settings: Settings, thread: str, state_schema: Any) -> dict[str, Any]:
    """Run the conversation; return its records' bytes by super-step."""
    from chatlog.histories.checkpointer import ChatLogCheckpointSaver

    answers = iter([AIMessage(f"answer {i}: " + "lorem ipsum " * 16) for i in range(TURNS)])
    model = GenericFakeChatModel(messages=answers)
    with ChatLogCheckpointSaver(settings) as saver:
        agent = create_agent(model, tools=[], checkpointer=saver, state_schema=state_schema)
        config = {"configurable": {"thread_id": thread}}
        for turn in range(TURNS):
            result = agent.invoke({"messages": [HumanMessage(f"question {turn}")]}, config)
    assert len(result["messages"]) == 2 * TURNS
    records = [
        r for r in read_topic(settings, settings.checkpoint_topic) if r.key == thread.encode()
    ]
    puts = [r for r in records if dict(r.headers)["event-type"] == b"CheckpointPut"]
    total = sum(len(r.value) for r in records)
    return {
        "records": len(records),
        "super_steps": len(puts),
        "total_bytes": total,
        "bytes_per_super_step": total / len(puts),
        # The median, not the last: at 100 updates a DeltaChannel writes a full snapshot.
        "median_put_bytes": statistics.median(len(r.value) for r in puts),
    }


def test_bytes_per_super_step_with_and_without_delta_channels(
    module_settings: Settings, module_projector: Projector
) -> None:
    """Full channels grow with the conversation; a DeltaChannel keeps each step small."""
    full = _conversation(module_settings, unique("full"), None)
    delta = _conversation(module_settings, unique("delta"), DeltaAgentState)
    print(f"\nfull channels: {full}\ndelta channel: {delta}")
    assert full["super_steps"] == delta["super_steps"] >= 2 * TURNS
    assert delta["bytes_per_super_step"] * 3 < full["bytes_per_super_step"]
    assert delta["median_put_bytes"] * 5 < full["median_put_bytes"]
    assert delta["total_bytes"] * 3 < full["total_bytes"]
