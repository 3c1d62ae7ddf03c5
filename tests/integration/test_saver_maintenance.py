"""Prune, copy, delete-for-runs, delta-channel history, ownership and user threads of the saver.

Real broker, real Redis and one running projector for the module; each test
uses its own thread ids (and users).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import operator
from typing import Annotated, Any

import pytest
from click.testing import CliRunner
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.errors import ThreadOwnershipError
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.projector import Projector
from chatlog.projector.checkpoint_replay import replay_checkpoints
from tests.helpers import cli_args, eventually, unique

SETTINGS_OVERRIDES = {"partitions": 2}


def _concat(state: list[str], writes: list[list[str]]) -> list[str]:
    return [*state, *(item for write in writes for item in write)]


class DeltaState(TypedDict):
    """A graph state whose ``items`` is a DeltaChannel snapshotting every 5 updates."""

    items: Annotated[list[str], DeltaChannel(_concat, snapshot_frequency=5)]
    count: Annotated[int, operator.add]


def _delta_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    def step(state: DeltaState) -> dict[str, Any]:
        return {"items": [f"seen {state['count']}"], "count": 1}

    builder = StateGraph(DeltaState)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder.compile(checkpointer=saver)


class AskState(TypedDict):
    """A graph that asks the human before it answers."""

    question: str
    answer: str


def _asking_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    def ask(state: AskState) -> dict[str, Any]:
        return {"answer": f"{state['question']} -> {interrupt('approve?')}"}

    builder = StateGraph(AskState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=saver)


def _config(thread_id: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread_id, **extra}}


def _ids(saver: ChatLogCheckpointSaver, thread_id: str) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in saver.list(_config(thread_id))]


def test_keep_latest_keeps_delta_channels_whole(module_saver: ChatLogCheckpointSaver) -> None:
    """After keep_latest a DeltaChannel rebuilds the same value and the graph goes on."""
    graph, thread = _delta_graph(module_saver), unique("delta")
    for turn in range(7):
        graph.invoke({"items": [f"turn {turn}"], "count": 0}, _config(thread))
    before = graph.get_state(_config(thread)).values
    count_before = len(_ids(module_saver, thread))
    module_saver.prune([thread], strategy="keep_latest")
    after = graph.get_state(_config(thread)).values
    assert after == before
    assert 1 < len(_ids(module_saver, thread)) < count_before
    graph.invoke({"items": ["turn 7"], "count": 0}, _config(thread))
    assert graph.get_state(_config(thread)).values["items"] == [
        *before["items"],
        "turn 7",
        f"seen {before['count']}",
    ]


def test_delta_history_is_the_base_walk_in_one_round_trip(
    module_saver: ChatLogCheckpointSaver,
) -> None:
    """get_delta_channel_history equals LangGraph's get_tuple walk, for every checkpoint."""
    graph, thread = _delta_graph(module_saver), unique("walk")
    for turn in range(5):
        graph.invoke({"items": [f"turn {turn}"], "count": 0}, _config(thread))
    configs = [t.config for t in module_saver.list(_config(thread))]
    assert len(configs) > 5
    for config in configs:
        ours = module_saver.get_delta_channel_history(config=config, channels=["items", "count"])
        walked = BaseCheckpointSaver.get_delta_channel_history(
            module_saver, config=config, channels=["items", "count"]
        )
        assert ours == walked
        assert (
            asyncio.run(
                module_saver.aget_delta_channel_history(config=config, channels=["items", "count"])
            )
            == walked
        )


def test_keep_latest_keeps_a_pending_interrupt(module_saver: ChatLogCheckpointSaver) -> None:
    """A run paused on interrupt() resumes after keep_latest as if nothing was pruned."""
    graph, thread = _asking_graph(module_saver), unique("ask")
    graph.invoke({"question": "first"}, _config(thread))
    graph.invoke(Command(resume="yes"), _config(thread))
    graph.invoke({"question": "second"}, _config(thread))
    assert graph.get_state(_config(thread)).interrupts
    module_saver.prune([thread], strategy="keep_latest")
    assert len(_ids(module_saver, thread)) == 1
    assert graph.invoke(Command(resume="ok"), _config(thread))["answer"] == "second -> ok"


def test_copy_delete_for_runs_and_prune_replay_to_the_same_threads(
    module_saver: ChatLogCheckpointSaver, module_settings: Settings
) -> None:
    """Replaying the checkpoint log reproduces copy_thread, delete_for_runs and prune."""
    graph = _delta_graph(module_saver)
    source, target, pruned = unique("src"), unique("dst"), unique("pruned")
    runs = [unique("run") for _ in range(3)]
    for turn, run in enumerate(runs):
        # LangGraph copies config["metadata"] into checkpoint metadata (the server's run_id).
        graph.invoke(
            {"items": [f"a{turn}"], "count": 0}, {**_config(source), "metadata": {"run_id": run}}
        )
        graph.invoke({"items": [f"b{turn}"], "count": 0}, _config(pruned))
    module_saver.copy_thread(source, target)
    assert graph.get_state(_config(target)).values == graph.get_state(_config(source)).values
    assert _ids(module_saver, target) == _ids(module_saver, source)
    module_saver.delete_for_runs([runs[0]])
    left = {t.metadata.get("run_id") for t in module_saver.list(_config(source))}
    assert left == {runs[1], runs[2]}
    # The copy's checkpoints are its own: a run deletion on the source leaves them.
    assert {t.metadata.get("run_id") for t in module_saver.list(_config(target))} == set(runs)
    module_saver.prune([pruned], strategy="delete")
    expected = {
        t: [(c.checkpoint, c.metadata, c.pending_writes) for c in module_saver.list(_config(t))]
        for t in (source, target, pruned)
    }
    namespace = f"{module_settings.namespace}-rebuilt"
    replay_checkpoints(module_settings, namespace=namespace)
    rebuilt_settings = dataclasses.replace(module_settings, namespace=namespace)
    with ChatLogCheckpointSaver(rebuilt_settings) as rebuilt:
        found = {
            t: [(c.checkpoint, c.metadata, c.pending_writes) for c in rebuilt.list(_config(t))]
            for t in (source, target, pruned)
        }
    assert found == expected
    assert expected[pruned] == []


def test_a_thread_belongs_to_its_first_user(
    module_saver: ChatLogCheckpointSaver, module_settings: Settings
) -> None:
    """Another user's reads and writes are refused; threads(user) lists newest first."""
    graph = _asking_graph(module_saver)
    alice, bob = unique("alice"), unique("bob")
    older, newer = unique("t-old"), unique("t-new")
    graph.invoke({"question": "q1"}, _config(older, user_id=alice))
    graph.invoke({"question": "q2"}, _config(newer, user_id=alice))
    with pytest.raises(ThreadOwnershipError):
        module_saver.get_tuple(_config(older, user_id=bob))
    with pytest.raises(ThreadOwnershipError):
        graph.invoke({"question": "mine now"}, _config(older, user_id=bob))
    with pytest.raises(ThreadOwnershipError):
        list(module_saver.list(_config(newer, user_id=bob)))
    assert [t.thread_id for t in module_saver.threads(alice)] == [newer, older]
    assert module_saver.threads(bob) == []
    assert [t.thread_id for t in asyncio.run(module_saver.athreads(alice))] == [newer, older]
    result = CliRunner().invoke(
        cli, cli_args(module_settings, "threads", "list", "--user", alice, "--json")
    )
    assert result.exit_code == 0, result.output
    assert [row["thread_id"] for row in json.loads(result.output)] == [newer, older]


def test_delete_user_removes_the_users_threads(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """ChatLog.delete_user also deletes every LangGraph thread the user owns."""
    user = unique("leaving")
    with ChatLogCheckpointSaver(module_settings) as saver:
        graph = _asking_graph(saver)
        thread = unique("t")
        graph.invoke({"question": "q"}, _config(thread, user_id=user))
        assert [t.thread_id for t in saver.threads(user)] == [thread]
        module_chatlog.delete_user(user)
        # Another saver (the ChatLog's) wrote the deletions: eventually consistent here.
        eventually(lambda: saver.threads(user) == [])
        assert saver.get_tuple(_config(thread, user_id=user)) is None
