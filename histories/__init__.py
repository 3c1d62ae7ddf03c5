"""LangChain chat histories on the event log (installed as ``chatlog.histories``)."""

from __future__ import annotations

from chatlog.histories.history import ChatLogMessageHistory
from chatlog.histories.read_model import ReadModelReader, SessionSnapshot
from chatlog.histories.store import ChatLog

__all__ = ["ChatLog", "ChatLogMessageHistory", "ReadModelReader", "SessionSnapshot"]
