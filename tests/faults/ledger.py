"""What the fault tests promised and what they found: acknowledged appends vs. the read model.

Every event a fault test publishes carries a unique text (``<session>#<n>``)
as its message content. The :class:`Ledger` keeps every append the broker
acknowledged with the writer that sent it and that writer's own sequence
number (the order the writer sent it in); :func:`reconcile` reads every
session back from Redis and counts what was lost, duplicated or reordered.
Order is judged by those sequence numbers alone, never by the offsets the
producer reported: a producer that reordered a session would report the
offsets of the reordered log and so pass an offset-based check.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from chatlog.errors import ReadModelError, ReadModelRepairingError
from chatlog.histories.store import ChatLog
from chatlog.keys import META_OFFSET, META_PARTITION, ReadModelKeys
from chatlog.producers.producer import LogPosition
from chatlog.schemas.events import ChatEvent, MessageAppended
from chatlog.settings import Settings


def message_event(session_id: str, text: str, *, user_id: str | None = None) -> ChatEvent:
    """A ``MessageAppended`` event whose content is ``text``."""
    return ChatEvent(session_id, MessageAppended(type="human", content=text), user_id=user_id)


#: The writer of appends recorded without one (a test with a single writer).
MAIN_WRITER = "main"


@dataclass(frozen=True, slots=True)
class Append:
    """One acknowledged append: where the broker stored which text, sent by whom, when.

    ``seq`` counts the appends ``writer`` sent to the session, from 0, in the
    order it sent them.
    """

    session_id: str
    partition: int
    offset: int
    text: str
    writer: str = MAIN_WRITER
    seq: int = 0


@dataclass
class Ledger:
    """Thread-safe record of every append sent, acknowledged or refused."""

    sent: int = 0
    failed: int = 0
    appends: dict[str, list[Append]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self,
        events: Sequence[ChatEvent],
        positions: Sequence[LogPosition],
        *,
        writer: str = MAIN_WRITER,
    ) -> None:
        """Record ``events``, sent by ``writer`` in this order, as acknowledged at ``positions``."""
        with self._lock:
            self.sent += len(events)
            for event, position in zip(events, positions, strict=True):
                payload = event.payload
                assert isinstance(payload, MessageAppended) and isinstance(payload.content, str)
                self._add(event.session_id, position.partition, position.offset,
                          payload.content, writer)

    def record_texts(
        self,
        session_id: str,
        texts: Sequence[str],
        positions: Iterable[Any],
        *,
        writer: str = MAIN_WRITER,
    ) -> None:
        """Record appends known by text and ``(partition, offset)`` pairs, sent in this order."""
        with self._lock:
            self.sent += len(texts)
            for text, (partition, offset) in zip(texts, positions, strict=True):
                self._add(session_id, int(partition), int(offset), text, writer)

    def _add(self, session_id: str, partition: int, offset: int, text: str, writer: str) -> None:
        appends = self.appends.setdefault(session_id, [])
        seq = sum(1 for a in appends if a.writer == writer)
        appends.append(Append(session_id, partition, offset, text, writer, seq))

    def record_failure(self, count: int) -> None:
        """Record ``count`` appends that raised instead of being acknowledged."""
        with self._lock:
            self.sent += count
            self.failed += count

    @property
    def acknowledged(self) -> int:
        """Number of acknowledged appends."""
        return sum(len(a) for a in self.appends.values())

    def texts(self, session_id: str) -> dict[str, Append]:
        """Every acknowledged append of a session by its (unique) text."""
        return {a.text: a for a in self.appends[session_id]}

    def expected(self, session_id: str) -> list[str]:
        """A session's acknowledged texts in log order (what a full read returns)."""
        with self._lock:
            appends = list(self.appends.get(session_id, []))
        return [a.text for a in sorted(appends, key=lambda a: (a.partition, a.offset))]

    def newest(self) -> dict[str, Append]:
        """Each session's newest acknowledged append."""
        return {s: max(a, key=lambda x: x.offset) for s, a in self.appends.items() if a}


@dataclass(frozen=True, slots=True)
class Figures:
    """What one scenario measured (printed by the tests, quoted in docs/reliability.md)."""

    scenario: str
    sessions: int
    sent: int
    acknowledged: int
    failed: int
    applied: int
    lost: int
    duplicated: int
    unexpected: int
    out_of_order_sessions: int
    extra: dict[str, Any]

    def line(self) -> str:
        """One greppable line: ``FIGURES scenario=... sent=... ...``."""
        fields = {
            "sessions": self.sessions,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "failed": self.failed,
            "applied": self.applied,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "out_of_order_sessions": self.out_of_order_sessions,
            **self.extra,
        }
        return f"FIGURES scenario={self.scenario} " + " ".join(
            f"{k}={v}" for k, v in fields.items()
        )

    def assert_exact(self) -> None:
        """Fail unless every append is accounted for and none was lost, duplicated or reordered."""
        assert self.sent == self.acknowledged + self.failed, self.line()
        assert (self.lost, self.duplicated, self.unexpected, self.out_of_order_sessions) == (
            0,
            0,
            0,
            0,
        ), self.line()


def _in_writer_order(appends: list[Append]) -> bool:
    """Whether each writer's appends, in the order read back, have rising sequence numbers."""
    last: dict[str, int] = {}
    for append in appends:
        if append.seq <= last.get(append.writer, -1):
            return False
        last[append.writer] = append.seq
    return True


def read_texts(client: redis.Redis, namespace: str, session_id: str) -> list[str]:
    """The message texts of a session as the read model holds them, in list order."""
    raw = client.lrange(ReadModelKeys(namespace).messages(session_id), 0, -1)
    return [json.loads(item)["data"]["content"] for item in raw]


def wait_caught_up(
    client: redis.Redis, namespace: str, ledger: Ledger, *, timeout_s: float = 90.0
) -> None:
    """Block until every session's applied offset reaches its newest acknowledged append.

    Raises:
        AssertionError: the projection is still behind after ``timeout_s`` (naming how far).
    """
    keys = ReadModelKeys(namespace)
    deadline = time.monotonic() + timeout_s
    while True:
        newest = ledger.newest()
        pipe = client.pipeline(transaction=False)
        for session_id in newest:
            pipe.hmget(keys.meta(session_id), [META_PARTITION, META_OFFSET])
        behind = 0
        for append, (partition, offset) in zip(newest.values(), pipe.execute(), strict=True):
            if offset is None or int(offset) < append.offset:
                behind += 1
            else:
                assert int(partition) == append.partition
        if not behind:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{behind} session(s) still not projected after {timeout_s:g}s")
        time.sleep(0.1)


def reconcile(
    scenario: str,
    client: redis.Redis,
    namespace: str,
    ledger: Ledger,
    **extra: Any,
) -> Figures:
    """Compare every session in Redis with the acknowledged appends; print and return figures."""
    applied = lost = duplicated = unexpected = disordered = 0
    for session_id in ledger.appends:
        expected = ledger.texts(session_id)
        found = read_texts(client, namespace, session_id)
        applied += len(found)
        counts = Counter(found)
        lost += sum(1 for text in expected if text not in counts)
        duplicated += sum(n - 1 for n in counts.values() if n > 1)
        unexpected += sum(n for text, n in counts.items() if text not in expected)
        if not _in_writer_order([expected[t] for t in dict.fromkeys(found) if t in expected]):
            disordered += 1
    figures = Figures(
        scenario=scenario,
        sessions=len(ledger.appends),
        sent=ledger.sent,
        acknowledged=ledger.acknowledged,
        failed=ledger.failed,
        applied=applied,
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        out_of_order_sessions=disordered,
        extra=dict(extra),
    )
    print(figures.line())
    return figures


@dataclass
class SampledReads:
    """What a sampling reader (:func:`sample_histories`) got while the read model was damaged."""

    served: list[tuple[str, list[str]]] = field(default_factory=list)
    refused: int = 0
    unavailable: int = 0
    errors: list[BaseException] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Every read tried: served, refused (ReadModelRepairingError) or unavailable."""
        return len(self.served) + self.refused + self.unavailable

    def truncated(self, ledger: Ledger) -> list[tuple[str, list[str]]]:
        """The served histories that are not a prefix of the session's acknowledged appends."""
        return [
            (session, texts)
            for session, texts in self.served
            if texts != ledger.expected(session)[: len(texts)]
        ]


def sample_histories(
    settings: Settings,
    sessions: Sequence[str],
    reads: SampledReads,
    stop: threading.Event,
    *,
    seed: int,
    user_id: str | None = None,
) -> None:
    """Read random sessions through a :class:`ChatLog` until ``stop`` is set (a thread's target).

    Each read is served, refused with ReadModelRepairingError, or unavailable
    (Redis itself is down, ReadModelError); anything else ends the sampling
    in ``reads.errors``.
    """
    rng = random.Random(seed)
    chatlog = ChatLog(settings)
    try:
        while not stop.is_set():
            session = rng.choice(sessions)
            try:
                messages = chatlog.history(session, user_id=user_id).messages
            except ReadModelRepairingError:
                reads.refused += 1
            except ReadModelError:
                reads.unavailable += 1
                stop.wait(0.05)
            else:
                reads.served.append((session, [str(m.content) for m in messages]))
    except BaseException as exc:
        reads.errors.append(exc)
    finally:
        chatlog.close()
