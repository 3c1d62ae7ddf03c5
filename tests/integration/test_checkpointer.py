"""ChatLogCheckpointSaver behaves like LangGraph's InMemorySaver, on the real log and Redis.

Every scenario runs against both savers and the results are compared. One
projector serves the whole module (a consumer-group join costs seconds);
each test uses its own thread ids.
"""

from __future__ import annotations

import asyncio
import json
import operator
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
import redis
from click.testing import CliRunner
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointTuple,
    create_checkpoint,
    empty_checkpoint,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.errors import ProjectionLagError, UnsafeInputError
from chatlog.histories.checkpointer import ChatLogCheckpointSaver
from chatlog.producers.producer import EncodedEvent
from chatlog.projector import Projector
from chatlog.projector.checkpoint_projection import CheckpointProjection, CheckpointRecord
from chatlog.schemas.checkpoint_events import CheckpointEvent, ThreadDeleted, WritesPut
from tests.helpers import delete_namespace

SETTINGS_OVERRIDES = {"partitions": 2}


#: LangGraph's error channel (private in langgraph; WRITES_IDX_MAP gives it index -1).
ERROR = "__error__"


@pytest.fixture
def saver(
    module_settings: Settings, module_projector: Projector
) -> Iterator[ChatLogCheckpointSaver]:
    """A checkpoint saver on the module's log, closed after the test."""
    with ChatLogCheckpointSaver(module_settings) as made:
        yield made


def _thread() -> str:
    return f"thread-{uuid.uuid4().hex[:8]}"


def _config(thread_id: str, checkpoint_ns: str = "", checkpoint_id: str | None = None) -> Any:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _checkpoints(count: int) -> list[Checkpoint]:
    """A chain of checkpoints whose channel versions grow like a graph run's."""
    memory = InMemorySaver()
    chain: list[Checkpoint] = []
    current = empty_checkpoint()
    for step in range(count):
        current = create_checkpoint(current, None, step)
        previous = current["channel_versions"].get("messages")
        version = memory.get_next_version(str(previous) if previous else None, None)
        current["channel_versions"]["messages"] = version
        current["channel_values"]["messages"] = [f"message {i}" for i in range(step + 1)]
        if step == 0:
            current["channel_versions"]["static"] = memory.get_next_version(None, None)
            current["channel_values"]["static"] = {"set": "once"}
        chain.append(current)
    return chain


def _fill(saver: BaseCheckpointSaver[Any], thread_id: str, chain: list[Checkpoint]) -> list[Any]:
    """Write a thread with a parent chain, a subgraph namespace and pending writes."""
    configs: list[Any] = []
    parent = _config(thread_id)
    for step, checkpoint in enumerate(chain):
        new_versions = (
            dict(checkpoint["channel_versions"])
            if step == 0
            else {"messages": checkpoint["channel_versions"]["messages"]}
        )
        metadata: Any = {"source": "input" if step == 0 else "loop", "step": step}
        parent = saver.put(parent, checkpoint, metadata, new_versions)
        configs.append(parent)
    child = _config(thread_id, "child:1")
    saver.put(child, chain[0], {"source": "loop", "step": 0}, {"static": "1"})
    target = configs[1]
    saver.put_writes(target, [("messages", "from b"), ("other", 2)], "task-b", "path-b")
    saver.put_writes(target, [("messages", "from a")], "task-a", "path-a")
    # A repeated write of a (task, index) >= 0 keeps the first; special channels overwrite.
    saver.put_writes(target, [("messages", "ignored")], "task-a", "path-a")
    saver.put_writes(target, [(ERROR, "first error")], "task-c")
    saver.put_writes(target, [(ERROR, "second error")], "task-c")
    return configs


def _reads(saver: BaseCheckpointSaver[Any], thread_id: str, configs: list[Any]) -> dict[str, Any]:
    """Every read LangGraph makes of a saver, as comparable values."""
    return {
        "latest": saver.get_tuple(_config(thread_id)),
        "by_id": saver.get_tuple(configs[1]),
        "child": saver.get_tuple(_config(thread_id, "child:1")),
        "missing_id": saver.get_tuple(_config(thread_id, "", "no-such-id")),
        "missing_thread": saver.get_tuple(_config(_thread())),
        "all_namespaces": list(saver.list({"configurable": {"thread_id": thread_id}})),
        "root": list(saver.list(_config(thread_id))),
        "filtered": list(saver.list(_config(thread_id), filter={"source": "loop"})),
        "filtered_step": list(saver.list(None, filter={"step": 2, "source": "loop"})),
        "before": list(saver.list(_config(thread_id), before=configs[2])),
        "before_limit": list(saver.list(_config(thread_id), before=configs[2], limit=1)),
        "limit": list(saver.list({"configurable": {"thread_id": thread_id}}, limit=2)),
        "limit_zero": list(saver.list(_config(thread_id), limit=0)),
        "by_id_list": list(saver.list(configs[0])),
    }


def _only_thread(reads: dict[str, Any], thread_id: str) -> dict[str, Any]:
    """Listing every thread also finds other tests' threads: keep this one's."""
    reads["filtered_step"] = [
        t for t in reads["filtered_step"] if t.config["configurable"]["thread_id"] == thread_id
    ]
    return reads


def test_reads_equal_in_memory_saver_after_the_same_writes(saver: ChatLogCheckpointSaver) -> None:
    """get_tuple and list (filter, before, limit, namespaces, parents, writes) as InMemorySaver."""
    chain = _checkpoints(4)
    memory, thread_id = InMemorySaver(), _thread()
    ours = _only_thread(_reads(saver, thread_id, _fill(saver, thread_id, chain)), thread_id)
    theirs = _only_thread(_reads(memory, thread_id, _fill(memory, thread_id, chain)), thread_id)
    assert ours == theirs
    latest = ours["latest"]
    assert isinstance(latest, CheckpointTuple)
    assert latest.checkpoint["channel_values"] == {
        "messages": ["message 0", "message 1", "message 2", "message 3"],
        "static": {"set": "once"},
    }
    # writes_sort_key order: task path first, so the path-less write leads.
    assert [w[1:] for w in ours["by_id"].pending_writes] == [
        (ERROR, "second error"),
        ("messages", "from a"),
        ("messages", "from b"),
        ("other", 2),
    ]


def test_async_methods_equal_the_sync_in_memory_saver(saver: ChatLogCheckpointSaver) -> None:
    """aput, aput_writes, aget_tuple, alist and adelete_thread behave like the sync twins."""
    chain = _checkpoints(3)
    thread_id = _thread()
    memory = InMemorySaver()
    memory_configs = _fill(memory, thread_id, chain)

    async def scenario() -> tuple[Any, ...]:
        parent = _config(thread_id)
        configs = []
        for step, checkpoint in enumerate(chain):
            versions = (
                dict(checkpoint["channel_versions"])
                if step == 0
                else {"messages": checkpoint["channel_versions"]["messages"]}
            )
            metadata: Any = {"source": "input" if step == 0 else "loop", "step": step}
            parent = await saver.aput(parent, checkpoint, metadata, versions)
            configs.append(parent)
        await saver.aput(
            _config(thread_id, "child:1"), chain[0], {"source": "loop", "step": 0}, {"static": "1"}
        )
        target = configs[1]
        await saver.aput_writes(target, [("messages", "from b"), ("other", 2)], "task-b", "path-b")
        await saver.aput_writes(target, [("messages", "from a")], "task-a", "path-a")
        await saver.aput_writes(target, [("messages", "ignored")], "task-a", "path-a")
        await saver.aput_writes(target, [(ERROR, "first error")], "task-c")
        await saver.aput_writes(target, [(ERROR, "second error")], "task-c")
        latest = await saver.aget_tuple(_config(thread_id))
        listed = [t async for t in saver.alist(_config(thread_id), before=configs[2], limit=1)]
        everything = [t async for t in saver.alist({"configurable": {"thread_id": thread_id}})]
        await saver.adelete_thread(thread_id)
        gone = await saver.aget_tuple(_config(thread_id))
        return configs, latest, listed, everything, gone

    configs, latest, listed, everything, gone = asyncio.run(scenario())
    assert configs == memory_configs
    assert latest == memory.get_tuple(_config(thread_id))
    assert listed == list(memory.list(_config(thread_id), before=memory_configs[2], limit=1))
    assert everything == list(memory.list({"configurable": {"thread_id": thread_id}}))
    assert gone is None


def test_delete_thread_removes_checkpoints_and_writes_like_in_memory_saver(
    saver: ChatLogCheckpointSaver,
) -> None:
    """After delete_thread nothing of the thread is read; new puts start it afresh."""
    chain = _checkpoints(2)
    results = []
    for each in (saver, InMemorySaver()):
        thread_id, other = _thread(), _thread()
        _fill(each, thread_id, chain)
        _fill(each, other, chain)
        each.delete_thread(thread_id)
        deleted = (each.get_tuple(_config(thread_id)), list(each.list(_config(thread_id))))
        kept = len(list(each.list({"configurable": {"thread_id": other}})))
        each.put(_config(thread_id), chain[0], {"source": "input", "step": 0}, {})
        again = [t.config["configurable"]["checkpoint_id"] for t in each.list(_config(thread_id))]
        results.append((deleted, kept, again))
    assert results[0] == results[1]
    assert results[0][0] == (None, [])


def test_a_state_graph_keeps_its_conversation_across_restart_and_rebuild(
    module_settings: Settings, module_projector: Projector, redis_url: str
) -> None:
    """A compiled StateGraph continues its thread with a new saver and after wipe + replay."""

    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]
        turns: Annotated[int, operator.add]

    def reply(state: State) -> dict[str, Any]:
        said = [m.content for m in state["messages"] if isinstance(m, HumanMessage)]
        return {"messages": [AIMessage(f"heard {len(said)}: {said[-1]}")], "turns": 1}

    builder = StateGraph(State)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    config: RunnableConfig = {"configurable": {"thread_id": _thread()}}

    def turn(text: str) -> dict[str, Any]:
        with ChatLogCheckpointSaver(module_settings) as fresh:  # a new application process
            graph = builder.compile(checkpointer=fresh)
            state: dict[str, Any] = graph.invoke(
                {"messages": [HumanMessage(text)], "turns": 0}, config
            )
            fresh.get_tuple(config)  # read-your-writes: the projector has it all
            return state

    assert turn("one")["messages"][-1].content == "heard 1: one"
    assert turn("two")["messages"][-1].content == "heard 2: two"

    client = redis.Redis.from_url(redis_url)
    try:
        delete_namespace(client, module_settings.namespace)
        with ChatLogCheckpointSaver(module_settings) as wiped:
            assert wiped.get_tuple(config) is None
        # The operator's path: `chatlog replay checkpoints` over replay_checkpoints().
        replayed = CliRunner().invoke(
            cli,
            ["replay", "checkpoints", "--json"],
            env={
                "KAFKA_BOOTSTRAP_SERVERS": module_settings.kafka_bootstrap_servers,
                "REDIS_URL": module_settings.redis_url,
                "CHATLOG_TOPIC": module_settings.topic,
                "CHATLOG_NAMESPACE": module_settings.namespace,
            },
        )
        assert replayed.exit_code == 0, replayed.output
        progress = json.loads(replayed.output)
        assert progress["applied"] > 0 and progress["undecodable"] == 0
    finally:
        client.close()
    state = turn("three")
    assert [m.content for m in state["messages"]] == [
        "one",
        "heard 1: one",
        "two",
        "heard 2: two",
        "three",
        "heard 3: three",
    ]
    assert state["turns"] == 3


def test_create_agent_keeps_its_conversation_across_restart(
    module_settings: Settings, module_projector: Projector
) -> None:
    """create_agent(model, tools, checkpointer=saver) remembers earlier turns in a new process."""
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    config: RunnableConfig = {"configurable": {"thread_id": _thread()}}
    answers = iter([AIMessage("hello Ada"), AIMessage("you are Ada")])
    model = GenericFakeChatModel(messages=answers)
    for text in ("I am Ada", "who am I?"):
        with ChatLogCheckpointSaver(module_settings) as fresh:
            agent = create_agent(model, tools=[], checkpointer=fresh)
            result = agent.invoke({"messages": [HumanMessage(text)]}, config)
            fresh.get_tuple(config)
    assert [m.content for m in result["messages"]] == [
        "I am Ada",
        "hello Ada",
        "who am I?",
        "you are Ada",
    ]


def test_redelivered_checkpoint_events_are_applied_once(
    module_settings: Settings, redis_url: str
) -> None:
    """Applying a batch again (redelivery, replay over a live model) changes nothing."""
    client = redis.Redis.from_url(redis_url)
    namespace = f"{module_settings.namespace}-redelivery"
    try:
        projection = CheckpointProjection(client, namespace)
        writes = WritesPut("", "cp-1", "task", writes=())
        records = [
            CheckpointRecord(0, 10, CheckpointEvent("t", writes)),
            CheckpointRecord(0, 11, CheckpointEvent("t", ThreadDeleted())),
        ]
        first = projection.apply(records)
        again = projection.apply(records)
        assert (first.applied, first.skipped) == (2, 0)
        assert (again.applied, again.skipped) == (0, 2)
        assert again.applied_by_type == {}
    finally:
        delete_namespace(client, namespace)
        client.close()


def test_a_read_waits_for_its_own_writes_then_names_the_lag(
    settings_factory: Callable[..., Settings],
) -> None:
    """With no projector running, a read of the saver's own write raises ProjectionLagError."""
    settings = settings_factory(read_timeout_s=0.3, partitions=1)
    with ChatLogCheckpointSaver(settings) as lonely:
        thread_id = _thread()
        lonely.put(_config(thread_id), _checkpoints(1)[0], {"source": "input", "step": 0}, {})
        with pytest.raises(ProjectionLagError, match="behind this saver's own writes") as caught:
            lonely.get_tuple(_config(thread_id))
    assert caught.value.lag == 1


def test_pickle_serialization_is_refused() -> None:
    """A JsonPlusSerializer with pickle fallback is rejected before anything is written."""
    with pytest.raises(UnsafeInputError, match="pickle"):
        ChatLogCheckpointSaver(Settings(), serde=JsonPlusSerializer(pickle_fallback=True))


def test_undecodable_checkpoint_records_are_dead_lettered_and_the_thread_goes_on(
    module_settings: Settings, module_projector: Projector, saver: ChatLogCheckpointSaver
) -> None:
    """Garbage on the checkpoint topic goes to the dead-letter topic; later puts still apply."""
    thread_id = _thread()
    before = module_projector.stats.dead_lettered
    saver.producer.send_encoded(
        module_settings.checkpoint_topic, [EncodedEvent(thread_id.encode(), b"not avro", [])]
    )
    checkpoint = _checkpoints(1)[0]
    saver.put(_config(thread_id), checkpoint, {"source": "input", "step": 0}, {})
    found = saver.get_tuple(_config(thread_id))
    assert found is not None and found.checkpoint["id"] == checkpoint["id"]
    deadline = time.monotonic() + 20
    while module_projector.stats.dead_lettered == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert module_projector.stats.dead_lettered == before + 1


def _interrupting_graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """A parent graph with a subgraph node that asks a human before answering."""

    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    def ask(state: State) -> dict[str, Any]:
        answer = interrupt(f"approve {state['messages'][-1].content}?")
        return {"messages": [AIMessage(f"approved: {answer}")]}

    inner = StateGraph(State)
    inner.add_node("ask", ask)
    inner.add_edge(START, "ask")
    outer = StateGraph(State)
    outer.add_node("sub", inner.compile())
    outer.add_node("done", lambda state: {"messages": [AIMessage("done")]})
    outer.add_edge(START, "sub")
    outer.add_edge("sub", "done")
    outer.add_edge("done", END)
    return outer.compile(checkpointer=checkpointer)


def _history_shape(graph: Any, config: RunnableConfig) -> list[Any]:
    """A thread's state history without ids and timestamps, which differ between runs."""
    return [
        (
            [m.content for m in snapshot.values.get("messages", [])],
            snapshot.next,
            snapshot.metadata.get("step"),
            snapshot.metadata.get("source"),
            [(t.name, [i.value for i in t.interrupts]) for t in snapshot.tasks],
        )
        for snapshot in graph.get_state_history(config)
    ]


def test_an_interrupted_subgraph_resumes_in_a_new_process_like_in_memory_saver(
    module_settings: Settings, module_projector: Projector
) -> None:
    """interrupt() in a subgraph, resumed by Command after a restart; history as InMemorySaver's."""
    memory = InMemorySaver()
    shapes = []
    for backend in ("chatlog", "memory"):
        config: RunnableConfig = {"configurable": {"thread_id": _thread()}}
        with ChatLogCheckpointSaver(module_settings) as first:
            graph = _interrupting_graph(first if backend == "chatlog" else memory)
            paused = graph.invoke({"messages": [HumanMessage("deploy")]}, config)
            assert [i.value for i in paused["__interrupt__"]] == ["approve deploy?"]
            used = first if backend == "chatlog" else memory
            listed = used.list({"configurable": {"thread_id": config["configurable"]["thread_id"]}})
            assert any(t.config["configurable"]["checkpoint_ns"] for t in listed)  # the subgraph's
        with ChatLogCheckpointSaver(module_settings) as second:
            graph = _interrupting_graph(second if backend == "chatlog" else memory)
            state = graph.invoke(Command(resume="yes"), config)
            assert [m.content for m in state["messages"]] == ["deploy", "approved: yes", "done"]
            shapes.append(_history_shape(graph, config))
    assert shapes[0] == shapes[1]


def test_an_async_graph_on_chatlog_checkpointer_keeps_its_thread_across_restart(
    module_settings: Settings, module_projector: Projector
) -> None:
    """A graph ainvoked through ChatLog.checkpointer() continues its thread in a new process."""

    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    async def reply(state: State) -> dict[str, Any]:
        return {"messages": [AIMessage(f"seen {len(state['messages'])}")]}

    builder = StateGraph(State)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    config: RunnableConfig = {"configurable": {"thread_id": _thread()}}

    async def turn(text: str) -> list[Any]:
        with ChatLog(module_settings) as app:  # a new application process
            saver = app.checkpointer()
            graph = builder.compile(checkpointer=saver)
            state = await graph.ainvoke({"messages": [HumanMessage(text)]}, config)
            await saver.aget_tuple(config)
            return [m.content for m in state["messages"]]

    assert asyncio.run(turn("a")) == ["a", "seen 1"]
    assert asyncio.run(turn("b")) == ["a", "seen 1", "b", "seen 3"]
