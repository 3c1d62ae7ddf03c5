"""What a publish sends and what it gets back: :class:`EncodedEvent` and :class:`LogPosition`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from chatlog.errors import BrokerUnavailableError, RecordTooLargeError


class LogPosition(NamedTuple):
    """Where the broker stored one event: its partition and offset."""

    partition: int
    offset: int


class EncodedEvent(NamedTuple):
    """An event ready to send: key, value and Kafka headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


#: Room for the Kafka record and batch headers around one encoded event.
RECORD_OVERHEAD = 64 * 1024


def not_acknowledged(count: int, timeout_s: float, detail: str = "") -> BrokerUnavailableError:
    """The error for a publish whose records were not all acknowledged within ``timeout_s``."""
    return BrokerUnavailableError(
        f"the broker did not acknowledge {count} event(s) within {timeout_s:g}s "
        f"(CHATLOG_PUBLISH_TIMEOUT); nothing was confirmed{f' ({detail})' if detail else ''}"
    )


def too_large(topic: str, detail: str) -> RecordTooLargeError:
    """The error for a record the client or the broker refused as too large (never retried)."""
    return RecordTooLargeError(
        f"publishing to {topic!r} failed: a record is too large ({detail}); resending it "
        "cannot succeed: shrink it, or raise CHATLOG_MAX_EVENT_BYTES and the broker's "
        "message.max.bytes together"
    )


def resend_would_reorder(
    records: Sequence[EncodedEvent],
    positions: Sequence[LogPosition | None],
    sent: Sequence[int],
    refused: Sequence[int],
) -> bool:
    """Whether sending the ``refused`` records again could reorder a session.

    ``sent`` are the indexes of ``records`` in the attempt, ``refused`` those
    of them the broker refused unwritten, ``positions`` the acknowledged
    ones. A resend reorders a session when a later record of the same key
    (session) than its first refused one was already acknowledged.
    """
    first_refused = {records[i].key: i for i in reversed(refused)}
    return any(
        positions[i] is not None and records[i].key in first_refused
        and i > first_refused[records[i].key]
        for i in sent
    )


def resolve_soon(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], value: Any) -> None:
    """Set ``waiter``'s result from a Kafka client's own thread (a delivery callback)."""
    loop.call_soon_threadsafe(_set_result, waiter, value)


def reject_soon(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], exc: BaseException
) -> None:
    """Fail ``waiter`` from a Kafka client's own thread (a delivery callback)."""
    loop.call_soon_threadsafe(_set_exception, waiter, exc)


def _set_result(waiter: asyncio.Future[Any], value: Any) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _set_exception(waiter: asyncio.Future[Any], exc: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(exc)
