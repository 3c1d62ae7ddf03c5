"""What a publish sends and what it gets back: :class:`EncodedEvent` and :class:`LogPosition`."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple


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
