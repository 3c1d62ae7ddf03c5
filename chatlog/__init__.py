"""chatlog: chat message histories for LLM applications, event-sourced on Kafka.

``ChatLog``, ``ChatLogMessageHistory`` and ``ChatLogCheckpointSaver`` are
loaded on first access, so that processes which only project (and never
touch LangChain or LangGraph) do not import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatlog.errors import ChatLogError
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.histories import ChatLog, ChatLogMessageHistory
    from chatlog.histories.checkpointer import ChatLogCheckpointSaver

__all__ = [
    "ChatLog",
    "ChatLogCheckpointSaver",
    "ChatLogError",
    "ChatLogMessageHistory",
    "Settings",
    "__version__",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("ChatLog", "ChatLogMessageHistory"):
        from chatlog import histories

        return getattr(histories, name)
    if name == "ChatLogCheckpointSaver":
        # Needs the langgraph extra; importing chatlog alone must not.
        from chatlog.histories import checkpointer

        return checkpointer.ChatLogCheckpointSaver
    raise AttributeError(f"module 'chatlog' has no attribute {name!r}")
