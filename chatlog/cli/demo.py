"""The demo: both paths on one log, then a rebuild of the read model from the log.

The classic path is LangChain's ``RunnableWithMessageHistory`` over
``ChatLogMessageHistory``; the LangGraph path is a ``StateGraph`` compiled with
``ChatLogCheckpointSaver``, restarted (a new saver and graph, as a new process
would build them) and resumed. The LangGraph path needs the ``langgraph`` extra;
without it the demo runs the classic path and says how to get the rest.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core._api import LangChainDeprecationWarning
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

from chatlog.cli.devstack import EmbeddedStack
from chatlog.settings import Settings

#: What to install when LangGraph is missing.
LANGGRAPH_HINT = "pip install 'chatlog[langgraph]'"


class EchoChatModel(BaseChatModel):
    """A deterministic local chat model: it answers from what it was told, no network."""

    @property
    def _llm_type(self) -> str:
        return "chatlog-echo"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        human = [m for m in messages if isinstance(m, HumanMessage)]
        last = human[-1].content if human else ""
        text = f"(turn {len(human)}) you said: {last}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def conversation_chain(get_session_history: Any) -> RunnableWithMessageHistory:
    """A prompt + :class:`EchoChatModel` wrapped in ``RunnableWithMessageHistory``."""
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a terse assistant."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    return RunnableWithMessageHistory(
        prompt | EchoChatModel(),
        get_session_history,
        input_messages_key="question",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(id="session_id", annotation=str, is_shared=True),
            ConfigurableFieldSpec(id="user_id", annotation=str, is_shared=True),
        ],
    )


@dataclass
class GraphDemo:
    """The LangGraph thread, as read back before the restart and after resuming it."""

    thread_id: str
    before_restart: list[BaseMessage]
    resumed: list[BaseMessage]


@dataclass
class DemoReport:
    """What the demo did and saw."""

    histories: dict[tuple[str, str], list[BaseMessage]] = field(default_factory=dict)
    rebuilt: dict[tuple[str, str], list[BaseMessage]] = field(default_factory=dict)
    events_replayed: int = 0
    seconds: float = 0.0
    #: The LangGraph path, or ``None`` when LangGraph is not installed.
    graph: GraphDemo | None = None

    @property
    def identical(self) -> bool:
        """Whether the rebuilt read model equals the one before the wipe."""
        return self.histories == self.rebuilt


@contextmanager
def demo_settings(settings: Settings | None, *, embedded: bool) -> Iterator[Settings]:
    """Settings for the demo: an embedded stack, or the given services with a fresh topic."""
    with ExitStack() as stack:
        unique = uuid.uuid4().hex[:8]
        base = settings or Settings()
        if embedded:
            base = stack.enter_context(EmbeddedStack()).settings(base)
        yield base.with_(
            topic=f"chatlog.demo-{unique}",
            namespace=f"chatlog:demo-{unique}",
            consumer_group=f"chatlog-demo-{unique}",
            consumer_session_timeout_ms=6000,
            consumer_heartbeat_interval_ms=1000,
        )


def run_demo(
    settings: Settings,
    *,
    users: Sequence[str] = ("alice", "bob"),
    sessions_per_user: int = 2,
    questions: Sequence[str] = ("What is an event log?", "And why replay it?"),
) -> DemoReport:
    """Run conversations through chatlog, wipe the read model, rebuild it, compare."""
    from chatlog.histories import ChatLog
    from chatlog.projector import Projector
    from chatlog.projector.replay import Replayer

    started = time.monotonic()
    report = DemoReport()
    with ChatLog(settings) as chatlog, Projector(settings).running(), warnings.catch_warnings():
        # langchain-core 1.6.4 deprecated RunnableWithMessageHistory (removal in 2.0); the
        # demo shows it on purpose, beside the LangGraph path that replaces it.
        warnings.filterwarnings("ignore", category=LangChainDeprecationWarning)
        chain = conversation_chain(chatlog.get_session_history)
        # Session ids from new_session: unguessable, so no user can squat another's.
        keys = [
            (u, chatlog.new_session(u, prefix=f"{u}-chat-{n + 1}-"))
            for u in users
            for n in range(sessions_per_user)
        ]
        for question in questions:
            for user, session in keys:
                config: RunnableConfig = {
                    "configurable": {"session_id": session, "user_id": user}
                }
                chain.invoke({"question": f"{question} [{session}]"}, config=config)
        for user, session in keys:
            report.histories[(user, session)] = chatlog.history(session, user).messages
        replayer = Replayer(settings, redis_client=chatlog.redis)
        # Stop nothing: the live projector keeps serving while the namespace
        # is wiped and rebuilt; it is idle because no one writes.
        replayer.drop(settings.namespace, allow_active=True)
        report.events_replayed = replayer.rebuild(settings.namespace).done
        for user, session in keys:
            report.rebuilt[(user, session)] = chatlog.history(session, user).messages
        if langgraph_installed():
            report.graph = run_graph_demo(settings)
    report.seconds = time.monotonic() - started
    return report


def langgraph_installed() -> bool:
    """Whether the ``langgraph`` extra (LangGraph and its checkpoint package) is installed."""
    packages = ("langgraph", "langgraph.graph", "langgraph.checkpoint")
    return all(importlib.util.find_spec(name) is not None for name in packages)


def run_graph_demo(
    settings: Settings,
    *,
    thread_id: str = "ada-thread",
    questions: Sequence[str] = ("I am Ada.", "Who am I?"),
) -> GraphDemo:
    """Run a ``StateGraph`` on ``ChatLogCheckpointSaver``, restart it, resume the thread.

    A projector must be running on ``settings`` (it applies the checkpoint topic too).
    """
    from langgraph.graph import START, MessagesState, StateGraph

    from chatlog.histories.checkpointer import ChatLogCheckpointSaver

    model = EchoChatModel()

    def respond(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", respond)
    builder.add_edge(START, "model")
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    first, *later = questions
    with ChatLogCheckpointSaver(settings) as saver:
        graph = builder.compile(checkpointer=saver)
        graph.invoke({"messages": [HumanMessage(first)]}, config)
        # Read-your-writes: the saver waits until the projector applied its checkpoints.
        before: list[BaseMessage] = graph.get_state(config).values["messages"]
    # "Restarted": a new saver and graph, as a new application process would build them.
    with ChatLogCheckpointSaver(settings) as saver:
        graph = builder.compile(checkpointer=saver)
        for question in later:
            graph.invoke({"messages": [HumanMessage(question)]}, config)
        resumed: list[BaseMessage] = graph.get_state(config).values["messages"]
    return GraphDemo(thread_id, before_restart=before, resumed=resumed)
