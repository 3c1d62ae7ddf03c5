"""The demo: a LangChain conversation on chatlog, then a rebuild of the read model from the log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec, RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

from chatlog.cli.devstack import EmbeddedStack
from chatlog.settings import Settings


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
class DemoReport:
    """What the demo did and saw."""

    histories: dict[tuple[str, str], list[BaseMessage]] = field(default_factory=dict)
    rebuilt: dict[tuple[str, str], list[BaseMessage]] = field(default_factory=dict)
    events_replayed: int = 0
    seconds: float = 0.0

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
    with ChatLog(settings) as chatlog, Projector(settings).running():
        chain = conversation_chain(chatlog.get_session_history)
        keys = [(u, f"{u}-chat-{n + 1}") for u in users for n in range(sessions_per_user)]
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
    report.seconds = time.monotonic() - started
    return report
