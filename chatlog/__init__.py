"""chatlog: chat message histories for LLM applications, event-sourced on Kafka.

``ChatLog`` and ``ChatLogMessageHistory`` are loaded on first access, so that
processes which only project (and never touch LangChain) do not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatlog.errors import ChatLogError
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.histories import ChatLog, ChatLogMessageHistory

__all__ = ["ChatLog", "ChatLogError", "ChatLogMessageHistory", "Settings", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("ChatLog", "ChatLogMessageHistory"):
        from chatlog import histories

        return getattr(histories, name)
    raise AttributeError(f"module 'chatlog' has no attribute {name!r}")
