"""A PublishError then a retry with the same messages: each message ends up in the session once.

The broker is frozen (SIGSTOP) while the caller appends. Whether the record
reached the log before the freeze is the ambiguity a caller cannot resolve;
the test makes both outcomes happen: the records written before the freeze
(as when only the acknowledgement was lost) and not written at all. The
caller gets PublishError, retries with the same message objects after the
broker is back, and the projected session holds each message once, in order.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chatlog import ChatLog
from chatlog.cli.devstack import EmbeddedBroker
from chatlog.errors import PublishError
from chatlog.histories.message_ids import assign_message_ids
from chatlog.histories.messages import to_event
from chatlog.projector import Projector
from chatlog.schemas.events import ChatEvent
from chatlog.settings import Settings
from tests.helpers import unique

PUBLISH_TIMEOUT_S = 2.0


@pytest.mark.slow
def test_a_retry_after_publish_error_leaves_each_message_once(
    kafka_client: str,
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    own_broker: EmbeddedBroker,
    redis_client: redis.Redis,
) -> None:
    """Written-but-unacknowledged and never-written appends, retried: once each, on both clients."""
    settings = settings_factory(
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        publish_timeout_s=PUBLISH_TIMEOUT_S,
        transport=kafka_client,
    )
    chatlog = chatlog_factory(settings)
    user = unique("u")
    written, unwritten = unique("written"), unique("unwritten")
    calls: dict[str, list[BaseMessage]] = {
        written: [HumanMessage("q1"), AIMessage("a1")],
        unwritten: [HumanMessage("q2"), AIMessage("a2")],
    }
    for session in calls:
        chatlog.history(session, user).add_messages([HumanMessage("before")])
    # What a lost acknowledgement leaves behind: the call's records in the log.
    assign_message_ids(calls[written])
    chatlog.producer.publish(
        [ChatEvent(written, to_event(m), user_id=user) for m in calls[written]]
    )
    errors: dict[str, PublishError] = {}
    own_broker.pause()
    try:
        for session, messages in calls.items():
            with pytest.raises(PublishError) as raised:
                chatlog.history(session, user).add_messages(messages)
            errors[session] = raised.value
    finally:
        own_broker.resume()
    for session, messages in calls.items():
        assert errors[session].message_ids == tuple(m.id for m in messages)
        # The retry: the same message objects, now carrying their ids.
        chatlog.history(session, user).add_messages(messages)
        chatlog.history(session, user).add_messages(messages)
    with Projector(settings).running():
        for session, messages in calls.items():
            history = chatlog.history(session, user)
            history.add_messages([HumanMessage("after")])
            contents = [m.content for m in history.messages]
            assert contents == ["before", *(m.content for m in messages), "after"], session
            assert [m.id for m in history.messages][1:3] == [m.id for m in messages]
