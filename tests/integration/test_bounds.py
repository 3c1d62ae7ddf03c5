"""Bounds (issue 17 item 9): the stored form is held to the size limit, listings and reads page."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.errors import InvalidCursorError, MessageTooLargeError
from chatlog.producers.admin import end_offsets, ensure_topic
from chatlog.producers.producer import EncodedEvent, EventProducer
from chatlog.projector import Projector
from chatlog.projector.dead_letter import HEADER_OFFSET, HEADER_REASON
from chatlog.schemas.codec import CONTENT_TYPE, EventCodec
from chatlog.schemas.events import ChatEvent, MessageAppended, ToolCall
from tests.helpers import cli_args, read_topic, unique, without_ids

SETTINGS_OVERRIDES = {"partitions": 2}
MIB = 1024 * 1024


def test_a_1_mb_event_with_200k_tool_calls_is_refused_before_publishing(
    module_settings: Settings, module_chatlog: ChatLog
) -> None:
    """The proof: 1 MB of Avro, 10 MB of stored JSON. Now MessageTooLargeError names the limit."""
    assert module_settings.max_event_bytes == MIB
    session = unique("tool-storm")
    message = AIMessage("", tool_calls=[{"name": "", "args": {}, "id": None}] * 200_000)
    history = module_chatlog.history(session, "u")
    producer = module_chatlog.producer
    event = ChatEvent(session, MessageAppended(type="ai", content="", tool_calls=(
        ToolCall(name="", args="{}", id=None),) * 200_000))
    assert len(producer.codec.encode(event)) < MIB  # the record alone was accepted
    before = sum(end_offsets(module_settings, module_settings.topic).values())
    with pytest.raises(MessageTooLargeError) as caught:
        history.add_messages([HumanMessage("first"), message])
    text = str(caught.value)
    assert "stored as" in text and str(MIB) in text
    stored = int(text.split("stored as ")[1].split(" ")[0])
    assert stored > 10 * 1000 * 1000  # what Redis would have held: over 10 MB
    # Nothing of the call was published, the first message neither.
    assert sum(end_offsets(module_settings, module_settings.topic).values()) == before


def test_a_forged_record_whose_stored_form_is_over_the_limit_is_dead_lettered(
    settings_factory: Callable[..., Settings],
    projector_factory: Callable[..., Projector],
    chatlog_factory: Callable[[Settings], ChatLog],
) -> None:
    """A producer that is not chatlog's publishes many tiny tool calls: a stored-over-size letter.

    The session's next message is applied, and the read model never holds
    the refused one.
    """
    limit = 64 * 1024
    settings = settings_factory(max_event_bytes=limit, partitions=1)
    ensure_topic(settings.topic, settings.partitions, settings=settings)
    ensure_topic(settings.dlq_topic, settings.partitions, settings=settings)
    projector_factory(settings)
    chatlog = chatlog_factory(settings)
    session = unique("forged")
    calls = (ToolCall(name="", args="{}", id=None),) * 10_000
    value = EventCodec().encode(
        ChatEvent(session, MessageAppended(type="ai", content="", tool_calls=calls), user_id="u")
    )
    assert len(value) < limit
    headers = [("event-type", b"MessageAppended"), ("content-type", CONTENT_TYPE.encode())]
    with EventProducer(settings) as forger:
        [forged] = forger.send_encoded(
            settings.topic, [EncodedEvent(session.encode(), value, headers)]
        )
    history = chatlog.history(session, "u")
    history.add_messages([HumanMessage("after")])
    assert without_ids(history.messages) == [HumanMessage("after")]
    deadline = time.monotonic() + 60
    while not sum(end_offsets(settings, settings.dlq_topic).values()):
        assert time.monotonic() < deadline, "the dead letter never arrived"
        time.sleep(0.2)
    [letter] = read_topic(settings, settings.dlq_topic)
    head = {k: bytes(v) for k, v in letter.headers}
    assert int(head[HEADER_OFFSET]) == forged.offset
    reason = head[HEADER_REASON].decode()
    assert reason.startswith("stored over-size") and str(limit) in reason


def _write_sessions(chatlog: ChatLog, user: str, count: int) -> list[str]:
    sessions = [unique(f"s{n}") for n in range(count)]
    for session in sessions:
        history = chatlog.history(session, user)
        history.add_messages([HumanMessage(session)])
        assert without_ids(history.messages) == [HumanMessage(session)]  # projected, in this order
    return sessions


def test_sessions_page_with_limit_and_cursor_and_the_default_still_lists_everything(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """7 sessions in pages of 3: 3, 3, 1, newest first, none repeated; sessions() has all 7."""
    user = unique("pager")
    written = _write_sessions(module_chatlog, user, 7)
    everything = module_chatlog.sessions(user)
    assert [s.session_id for s in everything] == written[::-1]
    pages = [module_chatlog.sessions(user, limit=3)]
    while pages[-1].next_cursor is not None:
        pages.append(module_chatlog.sessions(user, limit=3, cursor=pages[-1].next_cursor))
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [s.session_id for page in pages for s in page] == written[::-1]
    # Activity during paging moves a session ahead of the cursor: never shown
    # twice; it is on the first page of a listing started afresh.
    first = module_chatlog.sessions(user, limit=3)
    module_chatlog.history(written[1], user).add_messages([HumanMessage("again")])
    assert len(module_chatlog.history(written[1], user).messages) == 2
    rest = module_chatlog.sessions(user, limit=10, cursor=first.next_cursor)
    seen = [s.session_id for s in first] + [s.session_id for s in rest]
    assert seen == [s for s in written[::-1] if s != written[1]]
    assert module_chatlog.sessions(user, limit=1).sessions[0].session_id == written[1]
    with pytest.raises(InvalidCursorError):
        module_chatlog.sessions(user, limit=3, cursor="not a cursor")

    async def paged() -> list[int]:
        page = await module_chatlog.asessions(user, limit=4)
        return [len(page), len(await module_chatlog.asessions(user))]

    assert asyncio.run(paged()) == [4, 7]


def test_history_reads_page_backwards_with_limit_and_before(
    module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """7 messages in pages of 3 from the newest: positions 4-6, 1-3, 0; read() is all of them."""
    history = module_chatlog.history(unique("long"), "reader")
    messages = [HumanMessage(str(n)) for n in range(7)]
    history.add_messages(messages)
    assert history.read().messages == messages
    pages = [history.read(limit=3)]
    while pages[-1].next_before is not None:
        pages.append(history.read(limit=3, before=pages[-1].next_before))
    assert [(p.start, p.next_before, len(p.messages)) for p in pages] == [
        (4, 4, 3), (1, 1, 3), (0, None, 1),
    ]
    assert [m for p in reversed(pages) for m in p.messages] == messages
    # Appends after the first page do not shift the older pages.
    history.add_messages([HumanMessage("7")])
    assert history.read(limit=3, before=4).messages == messages[1:4]
    assert without_ids(history.read(before=0).messages) == []

    async def paged() -> tuple[int, list[str]]:
        page = await history.aread(limit=2)
        return page.start, [str(m.content) for m in page.messages]

    assert asyncio.run(paged()) == (6, ["6", "7"])
    with pytest.raises(ValueError):
        history.read(limit=0)


def test_cli_pages_sessions_and_history(
    module_settings: Settings, module_chatlog: ChatLog, module_projector: Projector
) -> None:
    """The sessions list --limit prints a --cursor hint; history show --limit a --before hint."""
    user = unique("cli-pager")
    written = _write_sessions(module_chatlog, user, 3)
    module_chatlog.history(written[0], user).add_messages([HumanMessage("two")])
    assert len(module_chatlog.history(written[0], user).messages) == 2
    runner = CliRunner()
    first = runner.invoke(
        cli, cli_args(module_settings, "sessions", "list", "--user", user, "--limit", "2")
    )
    assert first.exit_code == 0, first.output
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    second = runner.invoke(
        cli,
        cli_args(
            module_settings, "sessions", "list", "--user", user, "--limit", "2",
            "--cursor", cursor, "--json",
        ),
    )
    assert second.exit_code == 0, second.output
    assert "more sessions" not in second.stderr
    assert [r["session_id"] for r in json.loads(second.stdout)] == [written[1]]
    shown = runner.invoke(
        cli,
        cli_args(module_settings, "history", "show", written[0], "--user", user, "--limit", "1"),
    )
    assert shown.exit_code == 0, shown.output
    assert "two" in shown.stdout and "--before 1" in shown.stderr
