"""Everything the API accepts can be applied: nothing it accepts reaches the dead-letter topic.

Hypothesis draws TTLs (any float or int, NaN and infinities included),
expected versions and message ids. Whatever the API's validators accept is
turned into events as the history does, encoded, read back by the
projector's change reader and applied by the real script on a real Redis:
no record may be refused (the worker dead-letters exactly the refusals).
"""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage

from chatlog.errors import ChatLogError
from chatlog.histories.message_ids import assign_message_ids
from chatlog.histories.messages import to_event
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change
from chatlog.projector.redis_projection import RedisProjection
from chatlog.schemas.codec import EventCodec
from chatlog.schemas.events import ChatEvent, MessagesAppended, SessionTtlSet
from chatlog.settings import Settings
from chatlog.ttl import MAX_TTL_MS, ttl_ms_of
from tests.helpers import delete_namespace

codec = EventCodec()
reader = ChangeReader(codec, 1 << 20)
ttls = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, MAX_TTL_MS / 1000, MAX_TTL_MS / 1000 + 0.001, 9e15, 1e-4]),
)


class Record:
    """The attributes of a Kafka record the change reader needs."""

    def __init__(self, offset: int, event: ChatEvent) -> None:
        self.key = event.session_id.encode()
        self.value = codec.encode(event)
        self.partition = 0
        self.offset = offset


def accepted_ttl_ms(value: object) -> int | str | None:
    try:
        return ttl_ms_of(value)
    except ChatLogError:
        return "refused"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.tuples(ttls, st.integers(0, 2**63 - 1), st.sampled_from([None, "a", "b"])),
        min_size=1,
        max_size=8,
    ),
    default_ttl=st.sampled_from([None, 1.0, MAX_TTL_MS / 1000]),
)
def test_api_accepted_inputs_never_reach_the_dead_letter_topic(
    redis_client: redis.Redis,
    steps: list[tuple[object, int, str | None]],
    default_ttl: float | None,
) -> None:
    """TTL changes, appends and conditional appends the API accepts are all applied or decided."""
    namespace = f"test:accepted:{uuid.uuid4().hex[:10]}"
    projection = RedisProjection(redis_client, namespace, session_ttl_s=default_ttl)
    events = []
    for ttl, version, message_id in steps:
        ttl_ms = accepted_ttl_ms(ttl)
        if ttl_ms != "refused":
            assert ttl_ms is None or isinstance(ttl_ms, int)
            events.append(ChatEvent("s", SessionTtlSet(ttl_ms), user_id="u"))
        message = HumanMessage("hi", id=message_id)
        assign_message_ids([message])
        events.append(ChatEvent("s", to_event(message), user_id="u"))
        conditional = MessagesAppended(version, (to_event(HumanMessage("c", id=message_id)),))
        events.append(ChatEvent("s", conditional, user_id="u"))
    changes = []
    for offset, event in enumerate(events):
        change = reader.read(Record(offset, event))
        assert isinstance(change, Change), change
        changes.append(change)
    try:
        # Twice: the redelivered batch is skipped, never refused.
        for _ in range(2):
            result = projection.apply(changes)
            assert result.failed == []
    finally:
        delete_namespace(redis_client, namespace)


def test_settings_refuse_a_ttl_the_projection_cannot_apply() -> None:
    """A deployment TTL over 100 years (or NaN) is a configuration error."""
    for ttl in (MAX_TTL_MS / 1000 + 1, float("nan"), 9e15):
        with pytest.raises(ChatLogError):
            Settings(session_ttl_s=ttl)
