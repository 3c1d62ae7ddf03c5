"""Bad input at the API is refused with a typed ChatLogError, and nothing of it is stored."""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from chatlog import ChatLog
from chatlog.errors import (
    ChatLogError,
    EventDecodeError,
    InvalidMessageError,
    InvalidSessionIdError,
    MessageSerializationError,
    MessageTooLargeError,
    UnsafeInputError,
)
from chatlog.histories.importers import read_export
from chatlog.histories.storable import MAX_NESTING
from chatlog.keys import ReadModelKeys
from chatlog.producers.admin import end_offsets
from chatlog.schemas.codec import MAGIC, EventCodec
from chatlog.settings import Settings

MAX_EVENT_BYTES = 32 * 1024


def _bad_content(content: Any) -> BaseMessage:
    # pydantic refuses wrong content types at construction; model_construct
    # skips that, as objects built by other code or unpickled ones can.
    return HumanMessage.model_construct(content=content, additional_kwargs={},
                                        response_metadata={}, type="human")


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _cycle() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


BAD_SESSION_IDS: list[tuple[str, object]] = [
    ("empty", ""),
    ("too-long", "s" * 257),
    ("too-long-in-utf8", "é" * 129),
    ("newline", "a\nb"),
    ("nul", "a\x00b"),
    ("escape", "a\x1b[31m"),
    ("lone-surrogate", "a\ud800"),
    ("int", 42),
    ("bytes", b"session"),
    ("none", None),
]

BAD_MESSAGES: list[tuple[str, list[Any], type[ChatLogError]]] = [
    ("str-not-message", ["hello"], InvalidMessageError),
    ("dict-not-message", [{"type": "human", "content": "hi"}], InvalidMessageError),
    ("none-not-message", [None], InvalidMessageError),
    ("good-then-bad", [HumanMessage("fine"), object()], InvalidMessageError),
    ("content-int", [_bad_content(123)], InvalidMessageError),
    ("content-part-int", [_bad_content(["ok", 7])], InvalidMessageError),
    ("content-none", [_bad_content(None)], InvalidMessageError),
    ("kwargs-object", [HumanMessage("x", additional_kwargs={"o": object()})],
     MessageSerializationError),
    ("kwargs-set", [HumanMessage("x", additional_kwargs={"s": {1, 2}})],
     MessageSerializationError),
    ("kwargs-bytes", [HumanMessage("x", additional_kwargs={"b": b"\x00"})],
     MessageSerializationError),
    ("response-metadata-object", [AIMessage("x", response_metadata={"o": object()})],
     MessageSerializationError),
    ("oversize", [HumanMessage("x" * (MAX_EVENT_BYTES + 1))], MessageTooLargeError),
    ("good-then-oversize", [HumanMessage("fine"), HumanMessage("y" * (MAX_EVENT_BYTES * 2))],
     MessageTooLargeError),
    ("one-mib-line", [HumanMessage("z" * (1 << 20))], MessageTooLargeError),
    ("lone-surrogate", [HumanMessage("fine"), HumanMessage("a\ud800b")], InvalidMessageError),
    ("lone-surrogate-in-tool-call", [AIMessage("", tool_calls=[
        {"name": "f", "args": {"q": "\udfff"}, "id": "c1"}])], InvalidMessageError),
    ("nested-2000-levels", [HumanMessage("x", additional_kwargs=_nested(2000))],
     InvalidMessageError),
    ("nested-over-the-bound", [HumanMessage("x", additional_kwargs=_nested(MAX_NESTING + 1))],
     InvalidMessageError),
    ("kwargs-nan", [AIMessage("x", additional_kwargs={"score": float("nan")})],
     MessageSerializationError),
    ("artifact-infinity", [ToolMessage("x", tool_call_id="c", artifact=[float("inf")])],
     MessageSerializationError),
    ("kwargs-cycle", [HumanMessage("x", additional_kwargs={"c": _cycle()})],
     MessageSerializationError),
    ("kwargs-int-key", [HumanMessage("x", additional_kwargs={"d": {1: "a"}})],
     MessageSerializationError),
    ("kwargs-datetime", [HumanMessage("x", additional_kwargs={"t": datetime.now(timezone.utc)})],
     MessageSerializationError),
]


@pytest.fixture
def bad_input_chatlog(
    settings_factory: Callable[..., Settings], chatlog_factory: Callable[[Settings], ChatLog]
) -> ChatLog:
    """A ChatLog with a small event size limit; its topic exists and is empty."""
    chatlog = chatlog_factory(settings_factory(max_event_bytes=MAX_EVENT_BYTES))
    _ = chatlog.producer  # creates the topic, so "nothing stored" can be checked
    return chatlog


def _assert_nothing_stored(chatlog: ChatLog, client: redis.Redis) -> None:
    settings = chatlog.settings
    assert sum(end_offsets(settings, settings.topic).values()) == 0
    pattern = ReadModelKeys(settings.namespace).session_pattern()
    assert not list(client.scan_iter(match=pattern))


@pytest.mark.parametrize(
    ("case", "session_id"), BAD_SESSION_IDS, ids=[c for c, _ in BAD_SESSION_IDS]
)
def test_invalid_session_id_is_refused_and_nothing_is_stored(
    case: str, session_id: object, bad_input_chatlog: ChatLog, redis_client: redis.Redis
) -> None:
    """Empty, too long, control characters, non-str: InvalidSessionIdError, nothing published."""
    for open_history in (bad_input_chatlog.history, bad_input_chatlog.get_session_history):
        with pytest.raises(InvalidSessionIdError) as caught:
            open_history(session_id).add_messages([HumanMessage("hi")])  # type: ignore[arg-type]
        assert "session id" in str(caught.value)
    _assert_nothing_stored(bad_input_chatlog, redis_client)


# Serializing a message built with wrong content types warns before chatlog refuses it.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize(
    ("case", "messages", "error"), BAD_MESSAGES, ids=[c for c, _, _ in BAD_MESSAGES]
)
@pytest.mark.parametrize("path", ["sync", "async"])
def test_bad_message_is_refused_typed_and_nothing_of_the_call_is_stored(
    path: str,
    case: str,
    messages: list[Any],
    error: type[ChatLogError],
    bad_input_chatlog: ChatLog,
    redis_client: redis.Redis,
) -> None:
    """Non-messages, wrong content, unstorable values, over-size: typed error, no event.

    ``add_messages`` and ``aadd_messages`` refuse alike.
    """
    history = bad_input_chatlog.history("bad-input")
    with pytest.raises(error) as caught:
        if path == "sync":
            history.add_messages(messages)
        else:
            asyncio.run(history.aadd_messages(messages))
    assert len(str(caught.value)) > 20  # a sentence that says what is wrong
    _assert_nothing_stored(bad_input_chatlog, redis_client)


class _Exploit:
    """Unpickling this would create ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_codec_never_unpickles_and_refuses_pickled_bytes(protocol: int, tmp_path: Path) -> None:
    """Pickled bytes, bare or behind the Avro magic, raise EventDecodeError and run nothing."""
    marker = tmp_path / "exploited"
    payload = pickle.dumps(_Exploit(marker), protocol=protocol)
    codec = EventCodec()
    disguised = MAGIC + codec.registry.latest.fingerprint + payload
    for data in (payload, disguised):
        with pytest.raises(EventDecodeError):
            codec.decode(data)
    assert not marker.exists()


def test_import_refuses_pickled_data_without_loading_it(tmp_path: Path) -> None:
    """A pickle given to the importer raises UnsafeInputError and runs nothing."""
    marker = tmp_path / "exploited"
    payload = pickle.dumps(_Exploit(marker), protocol=pickle.HIGHEST_PROTOCOL)
    path = tmp_path / "history.json"
    path.write_bytes(payload)
    for source in (payload, path, tmp_path / "history.pkl"):
        with pytest.raises(UnsafeInputError) as caught:
            read_export(source)
        assert "pickle" in str(caught.value)
    assert not marker.exists()
