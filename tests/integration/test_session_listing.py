"""Listing a user's sessions reads the ChatLog's own writes, like every other read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from langchain_core.messages import HumanMessage

from chatlog import ChatLog, Settings
from chatlog.errors import ProjectionLagError
from chatlog.projector import Projector


def test_sessions_lists_a_session_the_same_chatlog_just_created(
    chatlog: ChatLog, projector: Projector
) -> None:
    """Each new session is in ``sessions()`` right after its first append: no polling."""
    for n in range(6):
        chatlog.history(f"new-{n}", user_id="alice").add_user_message(f"hello {n}")
        listed = [s.session_id for s in chatlog.sessions("alice")]
        assert sorted(listed) == [f"new-{i}" for i in range(n + 1)]
    assert [s.message_count for s in chatlog.sessions("alice")] == [1] * 6


def test_sessions_no_longer_lists_a_session_the_same_chatlog_just_deleted(
    chatlog: ChatLog, projector: Projector
) -> None:
    """``delete_session`` followed by ``sessions()`` shows the session gone."""
    chatlog.history("keep", user_id="bob").add_user_message("stays")
    chatlog.history("drop", user_id="bob").add_user_message("goes")
    assert {s.session_id for s in chatlog.sessions("bob")} == {"keep", "drop"}
    chatlog.delete_session("drop", "bob")
    assert [s.session_id for s in chatlog.sessions("bob")] == ["keep"]


def test_asessions_lists_a_session_the_same_chatlog_just_created(
    chatlog: ChatLog, projector: Projector
) -> None:
    """The async twin waits for the ChatLog's own writes too."""

    async def scenario() -> list[list[str]]:
        seen = []
        for n in range(3):
            history = chatlog.history(f"a-{n}", user_id="carol")
            await history.aadd_messages([HumanMessage(f"hi {n}")])
            seen.append(sorted(s.session_id for s in await chatlog.asessions("carol")))
        await chatlog.aclose()
        return seen

    assert asyncio.run(scenario()) == [["a-0"], ["a-0", "a-1"], ["a-0", "a-1", "a-2"]]


def test_sessions_raises_projection_lag_naming_the_unprojected_session(
    settings_factory: Callable[..., Settings], chatlog_factory: Callable[[Settings], ChatLog]
) -> None:
    """With no projector running, listing after a write raises the lag error, not a stale list."""
    chatlog = chatlog_factory(settings_factory(read_timeout_s=0.3))
    chatlog.history("unseen", user_id="dave").add_user_message("hello")
    with pytest.raises(ProjectionLagError, match="'unseen'"):
        chatlog.sessions("dave")
    assert chatlog.sessions("erin") == []  # nothing of erin's was written here: no wait
