"""LangChain chat histories on the event log (installed as ``chatlog.histories``)."""

from __future__ import annotations

from chatlog.histories.erasure import ErasureReport
from chatlog.histories.history import ChatLogMessageHistory
from chatlog.histories.message_pages import MessagePage
from chatlog.histories.read_model import ReadModelReader, SessionSnapshot
from chatlog.histories.session_pages import SessionPage
from chatlog.histories.sessions import SessionInfo
from chatlog.histories.store import ChatLog

__all__ = [
    "ChatLog",
    "ChatLogMessageHistory",
    "ErasureReport",
    "MessagePage",
    "ReadModelReader",
    "SessionInfo",
    "SessionPage",
    "SessionSnapshot",
]
