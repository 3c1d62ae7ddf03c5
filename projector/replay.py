"""Replay: rebuild read models from the log, the source of truth.

The :class:`Replayer` reads partitions with manual assignment (no consumer
group, so it never disturbs the live projector) up to end offsets captured
when it starts, and applies records with the same
:meth:`RedisProjection.apply` the live projector uses, so every rule of the
projection (clears, deletions, ownership, expiry) holds in a rebuild too.

A rebuild records its progress in the target namespace's applied positions
(:class:`~chatlog.projector.positions.AppliedPositions`) after every batch:
killed half-way, it resumes from there. Switching readers is one write of
the active-namespace pointer; the live projector follows it and, thanks to
the applied positions, re-reads whatever the new namespace has not applied
yet rather than leaving a gap.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any

import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from chatlog.errors import (
    ChatLogError,
    NamespaceInUseError,
    ReadModelError,
    ReplayError,
    TopicError,
)
from chatlog.identifiers import validate_session_id
from chatlog.keys import ReadModelKeys, active_namespace_key
from chatlog.namespaces import POINTER_TTL_S, ActiveNamespace
from chatlog.producers.admin import end_offsets, partition_count
from chatlog.producers.key_store import key_store_of
from chatlog.producers.log_reader import beginning_offsets, read_range
from chatlog.projector.change_reader import ChangeReader
from chatlog.projector.changes import Change, Refusal
from chatlog.projector.gc_threshold import young_gc_threshold
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.protocol import script_source
from chatlog.projector.redis_projection import ApplyResult, PendingApply, RedisProjection
from chatlog.projector.verify import ExpectedState, SessionDifference, compare
from chatlog.schemas.codec import EventCodec
from chatlog.settings import Settings

#: Rounds of catching up with appends made during a rebuild before it is done.
CATCH_UP_ROUNDS = 5
#: After a switch, the rebuild keeps applying new appends for this long, so the
#: new namespace stays current while readers and the projector move over.
HANDOFF_S = 4 * POINTER_TTL_S
#: How long verify waits for a moving read model to settle before reporting.
SETTLE_S = 5.0

_STATE_BUILDING = "building"
_STATE_COMPLETE = "complete"

# Puts a session rebuilt under a scratch namespace in place (layout: protocol).
_SWAP = script_source("session_swap")


@dataclass(slots=True)
class ReplayProgress:
    """Where a replay stands, and in the end what it did.

    ``done`` counts records read, ``applied``/``skipped`` what the projection
    did with them, ``undecodable`` records that are no chatlog event (or whose
    key is not their session id) and ``failed`` events the projection refused
    (both go to the dead-letter topic in live projection).
    """

    namespace: str = ""
    total: int = 0
    done: int = 0
    applied: int = 0
    skipped: int = 0
    undecodable: int = 0
    failed: int = 0
    partitions_total: int = 0
    partitions_done: int = 0
    resumed: bool = False
    as_of: datetime | None = None
    switched_from: str | None = None
    positions: dict[int, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the replay started until it finished (a switch's hand-off excluded)."""
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def rate(self) -> float:
        """Events read per second."""
        elapsed = self.elapsed_s
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate, when known."""
        rate = self.rate
        return max(self.total - self.done, 0) / rate if rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "namespace": self.namespace,
            "events_total": self.total,
            "events_read": self.done,
            "applied": self.applied,
            "skipped": self.skipped,
            "undecodable": self.undecodable,
            "failed": self.failed,
            "partitions_total": self.partitions_total,
            "partitions_done": self.partitions_done,
            "resumed": self.resumed,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "switched_from": self.switched_from,
            "positions": {str(p): o for p, o in sorted(self.positions.items())},
            "seconds": round(self.elapsed_s, 3),
            "events_per_second": round(self.rate, 1),
        }


@dataclass(slots=True)
class SessionReplay:
    """What :meth:`Replayer.rebuild_session` did."""

    session_id: str
    namespace: str
    partition: int
    events: int
    messages: int
    progress: ReplayProgress

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "session_id": self.session_id,
            "namespace": self.namespace,
            "partition": self.partition,
            "session_events": self.events,
            "messages": self.messages,
            "partition_events_read": self.progress.done,
            "seconds": round(self.progress.elapsed_s, 3),
        }


@dataclass(slots=True)
class VerifyReport:
    """What :meth:`Replayer.verify` found: every session whose read model differs."""

    namespace: str
    sessions_checked: int
    differences: list[SessionDifference]
    progress: ReplayProgress

    @property
    def ok(self) -> bool:
        """Whether the read model matches the log."""
        return not self.differences

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "namespace": self.namespace,
            "ok": self.ok,
            "sessions_checked": self.sessions_checked,
            "events_read": self.progress.done,
            "differences": [d.as_dict() for d in self.differences],
            "seconds": round(self.progress.elapsed_s, 3),
        }


ProgressCallback = Callable[[ReplayProgress], None]


def partition_for(session_id: str, partitions: int) -> int:
    """The partition kafka-python's default (murmur2) partitioner gives ``session_id``."""
    # The same arithmetic as kafka.partitioner.default.DefaultPartitioner (and
    # the Java client) for a keyed record: positive murmur2 modulo the count.
    return (int(murmur2(session_id.encode("utf-8"))) & 0x7FFFFFFF) % partitions


def parse_timestamp(value: str) -> datetime:
    """Parse a point in time: ISO 8601 (UTC when no zone is given) or epoch milliseconds.

    Raises:
        ReplayError: ``value`` is neither.

    """
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(
            f"{value!r} is not a time: give ISO 8601 (2026-01-31T12:00:00Z) "
            "or epoch milliseconds"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Replayer:
    """Rebuilds, drops and verifies read models from the log.

    Args:
        settings: Connections and topic; ``settings.redis_url`` is where readers
            and the active-namespace pointer live.
        redis_client: Redis to write rebuilt read models into (default: the
            settings' Redis). Give another deployment's client to rebuild there;
            switching is then refused, since readers must be re-pointed by
            configuration.
        gc_threshold: Python's generation-0 GC threshold while log ranges are
            applied (see :mod:`chatlog.projector.gc_threshold`); ``None`` leaves
            the interpreter's. ``chatlog replay`` sets it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        gc_threshold: int | None = None,
    ) -> None:
        self.settings = settings
        self.gc_threshold = gc_threshold
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url)
        self.codec = EventCodec()
        self.key_store = key_store_of(settings)
        self.reader = ChangeReader(
            self.codec, settings.max_event_bytes, key_store=self.key_store
        )
        self.active = ActiveNamespace.of(settings)

    # -- namespaces --------------------------------------------------------

    def active_namespace(self) -> str:
        """The namespace readers use now."""
        self.active.refresh()
        return self.active.get(self._home_redis())

    def drop(self, namespace: str, *, allow_active: bool = False) -> int:
        """Delete every key of ``namespace``; return how many were deleted.

        Raises:
            NamespaceInUseError: ``namespace`` is the active one (unless ``allow_active``).

        """
        if not allow_active and self._is_home() and namespace == self.active_namespace():
            raise NamespaceInUseError(
                f"namespace {namespace!r} is the active one; rebuild another namespace and "
                "switch readers to it first, then drop this one"
            )
        pointer = active_namespace_key(self.settings.topic).encode()
        deleted = 0
        batch: list[bytes] = []
        try:
            pattern = ReadModelKeys(namespace).all_pattern()
            for key in self.redis.scan_iter(match=pattern, count=1000):
                if key == pointer:
                    continue
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(self.redis.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(self.redis.unlink(*batch))
        except redis.RedisError as exc:
            raise ReadModelError(f"dropping namespace {namespace!r} failed: {exc}") from exc
        return deleted

    # -- rebuild -------------------------------------------------------------

    def rebuild(
        self,
        namespace: str | None = None,
        *,
        as_of: datetime | None = None,
        switch: bool = False,
        on_progress: ProgressCallback | None = None,
        handoff_s: float = HANDOFF_S,
    ) -> ReplayProgress:
        """Project the log from its beginning into ``namespace`` (default ``settings.namespace``).

        Reads every partition up to the end offsets captured at the start
        (or, with ``as_of``, up to the first record at or after that time),
        then, without ``as_of``, catches up with what was appended meanwhile.
        A namespace a previous rebuild left unfinished is resumed from its
        applied positions, not from offset zero. Rebuilding into a namespace
        that already holds sessions (in place) is safe, because applying is
        idempotent, but readers of it see whatever it holds meanwhile.

        With ``switch``, readers and the live projector are then pointed at
        ``namespace``; for ``handoff_s`` afterwards the rebuild keeps applying
        new appends so the namespace stays current while they move over.

        Raises:
            ReplayError: the options conflict, or an unfinished rebuild of
                ``namespace`` was started with another ``as_of``.
            TopicError: the topic is missing or cannot be read.
            ReadModelError: Redis failed; run the same rebuild again to resume.

        """
        namespace = namespace or self.settings.namespace
        if switch and as_of is not None:
            raise ReplayError(
                "switching readers to a rebuild as of a time would serve them a past state "
                "that the live projector then moves forward; rebuild as of a time without "
                "switching"
            )
        if switch and not self._is_home():
            raise ReplayError(
                "cannot switch readers to another Redis deployment; point REDIS_URL at it instead"
            )
        as_of_ms = _millis(as_of) if as_of is not None else None
        progress = ReplayProgress(namespace=namespace, as_of=as_of)
        positions = AppliedPositions(self.redis, namespace)
        ends = self._ends(as_of_ms)
        begins = self._beginnings(ends)
        marker = self._redis_call(lambda: self.redis.hgetall(ReadModelKeys(namespace).rebuild()))
        if marker:
            recorded_as_of = marker.get(b"as_of_ms", b"").decode()
            if recorded_as_of != ("" if as_of_ms is None else str(as_of_ms)):
                raise ReplayError(
                    f"namespace {namespace!r} holds a rebuild as of "
                    f"{recorded_as_of or 'now'}; resume it as of the same time, or drop it"
                )
            recorded = positions.read()
            starts = {p: max(begins[p], recorded.get(p, begins[p])) for p in ends}
            progress.resumed = True
        else:
            self._mark(
                namespace,
                state=_STATE_BUILDING,
                as_of_ms="" if as_of_ms is None else str(as_of_ms),
                started_at=str(int(time.time() * 1000)),
            )
            # Recorded before anything is applied: a live projector writing here
            # (an in-place rebuild) then rewinds to the beginning instead of
            # applying newer events first, which would make the older ones skipped.
            positions.advance(begins)
            starts = dict(begins)
        reached = self._project(namespace, starts, ends, progress, on_progress, as_of_ms)
        if as_of_ms is None:
            for _ in range(CATCH_UP_ROUNDS):
                newer = self._ends(None)
                if all(newer[p] <= reached.get(p, 0) for p in newer):
                    break
                reached = self._project(namespace, reached, newer, progress, on_progress, None)
        self._mark(
            namespace,
            state=_STATE_COMPLETE,
            finished_at=str(int(time.time() * 1000)),
            events=str(progress.done),
        )
        progress.finished_at = time.monotonic()
        if switch:
            progress.switched_from = self.active.switch(self.redis, namespace)
            deadline = time.monotonic() + handoff_s
            while time.monotonic() < deadline:
                newer = self._ends(None)
                if any(newer[p] > reached.get(p, 0) for p in newer):
                    reached = self._project(namespace, reached, newer, progress, on_progress, None)
                else:
                    time.sleep(0.05)
        progress.positions = reached
        return progress

    def _project(
        self,
        namespace: str,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
        as_of_ms: int | None,
    ) -> dict[int, int]:
        """Apply ``[starts, ends)`` of every partition to ``namespace``; return where it got."""
        projection = RedisProjection(
            self.redis, namespace, session_ttl_s=self.settings.session_ttl_s
        )
        reached = dict(starts)

        def finish(batch: PendingApply, next_offsets: dict[int, int]) -> None:
            result = self._redis_call(batch.result)
            progress.applied += result.applied
            progress.skipped += result.skipped
            progress.failed += len(result.failed)
            reached.update(next_offsets)
            if on_progress is not None:
                on_progress(progress)

        # As in the live projector: the next batch is polled and read while
        # Redis runs this one (its positions recorded by its last call); only
        # one batch is ever in Redis, so batches apply in log order.
        in_flight: tuple[PendingApply, dict[int, int]] | None = None
        with young_gc_threshold(self.gc_threshold):
            try:
                for records, next_offsets in self._read(
                    starts, ends, progress, as_of_ms=as_of_ms
                ):
                    if in_flight is not None:
                        done, in_flight = in_flight, None
                        finish(*done)
                    sent = self._redis_call(
                        partial(projection.send, records, advance=next_offsets)
                    )
                    in_flight = (sent, next_offsets)
            except BaseException:
                if in_flight is not None:
                    # Its verdicts (and its connection) are still owed; the error
                    # that stopped the replay is the one to report.
                    with suppress(ChatLogError, redis.RedisError):
                        finish(*in_flight)
                raise
            if in_flight is not None:
                finish(*in_flight)
        return reached

    # -- one session -----------------------------------------------------------

    def rebuild_session(
        self,
        session_id: str,
        namespace: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> SessionReplay:
        """Rebuild one session from its partition alone, and put it in place atomically.

        The session is rebuilt under a scratch namespace, then its keys replace
        the live ones in one script, unless the live projector applied a newer
        event meanwhile, in which case the replay reads on and tries again.

        Raises:
            InvalidSessionIdError: the session id is unusable.
            TopicError: the topic is missing or cannot be read.
            ReplayError: the session kept changing faster than it could be rebuilt.

        """
        validate_session_id(session_id)
        namespace = namespace or self.active_namespace()
        count = partition_count(self.settings, self.settings.topic)
        if not count:
            raise TopicError(f"topic {self.settings.topic!r} does not exist")
        partition = partition_for(session_id, count)
        scratch = f"{namespace}:replay-{uuid.uuid4().hex[:12]}"
        projection = RedisProjection(self.redis, scratch, session_ttl_s=self.settings.session_ttl_s)
        live, built = ReadModelKeys(namespace), ReadModelKeys(scratch)
        swap = self.redis.register_script(_SWAP)
        progress = ReplayProgress(namespace=namespace, partitions_total=1)
        end = end_offsets(self.settings, self.settings.topic, [partition])[partition]
        start = self._beginnings({partition: end})[partition]
        key = session_id.encode("utf-8")
        keys = [
            built.messages(session_id),
            built.meta(session_id),
            live.messages(session_id),
            live.meta(session_id),
        ]
        events = 0
        try:
            for _ in range(CATCH_UP_ROUNDS):
                window = ({partition: start}, {partition: end})
                for records, _next in self._read(*window, progress, key=key):
                    events += len(records)
                    result = self._apply(projection, records)
                    progress.applied += result.applied
                    progress.failed += len(result.failed)
                    if on_progress is not None:
                        on_progress(progress)
                if self._redis_call(partial(swap, keys=keys, args=[end - 1])):
                    break
                start = end
                end = end_offsets(self.settings, self.settings.topic, [partition])[partition]
            else:
                raise ReplayError(
                    f"session {session_id!r} kept changing during {CATCH_UP_ROUNDS} attempts "
                    "to rebuild it; try again"
                )
        finally:
            self.drop(scratch, allow_active=True)
        messages = self._redis_call(lambda: self.redis.llen(live.messages(session_id)))
        progress.finished_at = time.monotonic()
        return SessionReplay(session_id, namespace, partition, events, int(messages), progress)

    # -- verify ------------------------------------------------------------------

    def verify(
        self,
        namespace: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        settle_s: float = SETTLE_S,
    ) -> VerifyReport:
        """Recompute every session from the log and report each one the read model gets wrong.

        The log is folded up to the namespace's applied positions (or the end
        of the log when it has none). Sessions that differ are checked again
        for up to ``settle_s`` while the log is folded further, so a live
        projector moving the read model on is not mistaken for a difference.
        """
        namespace = namespace or self.active_namespace()
        keys = ReadModelKeys(namespace)
        positions = AppliedPositions(self.redis, namespace)
        ends = self._verify_ends(positions)
        begins = self._beginnings(ends)
        progress = ReplayProgress(namespace=namespace, partitions_total=len(ends))
        expected = ExpectedState(session_ttl_s=self.settings.session_ttl_s)
        reached = self._fold(expected, begins, ends, progress, on_progress)
        stored = self._redis_call(
            lambda: {
                ReadModelKeys.session_of(k.decode())
                for k in self.redis.scan_iter(match=keys.session_pattern(), count=1000)
            }
        )
        sessions = set(expected.sessions) | stored
        differences = self._differences(keys, expected, sessions)
        deadline = time.monotonic() + settle_s
        quiet_rounds = 0
        while differences and time.monotonic() < deadline:
            time.sleep(0.2)
            newer = self._verify_ends(positions)
            if any(newer[p] > reached.get(p, 0) for p in newer):
                quiet_rounds = 0
                reached = self._fold(expected, reached, newer, progress, on_progress)
            else:
                # Nothing was applied meanwhile: what still differs really differs.
                quiet_rounds += 1
                if quiet_rounds > 2:
                    break
            differences = self._differences(keys, expected, {d.session_id for d in differences})
        progress.positions = reached
        progress.finished_at = time.monotonic()
        return VerifyReport(namespace, len(sessions), differences, progress)

    def _verify_ends(self, positions: AppliedPositions) -> dict[int, int]:
        """Where to fold the log to: the namespace's applied positions, else the log's end."""
        ends = self._ends(None)
        recorded = positions.read()
        if recorded:
            ends = {p: min(end, recorded.get(p, end)) for p, end in ends.items()}
        return ends

    def _fold(
        self,
        expected: ExpectedState,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        on_progress: ProgressCallback | None,
    ) -> dict[int, int]:
        reached = dict(starts)
        for records, next_offsets in self._read(starts, ends, progress):
            for record in records:
                expected.add(record)
            reached.update(next_offsets)
            if on_progress is not None:
                on_progress(progress)
        return reached

    def _differences(
        self, keys: ReadModelKeys, expected: ExpectedState, sessions: set[str]
    ) -> list[SessionDifference]:
        found: list[SessionDifference] = []
        ordered = sorted(sessions)
        now_ms = int(time.time() * 1000)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for session_id in chunk:
                pipe.lrange(keys.messages(session_id), 0, -1)
            replies = self._redis_call(pipe.execute)
            for session_id, stored in zip(chunk, replies, strict=True):
                actual = [m.decode("utf-8") for m in stored]
                difference = compare(
                    session_id, expected.messages(session_id, now_ms=now_ms), actual
                )
                if difference is not None:
                    found.append(difference)
        return found

    # -- reading the log -----------------------------------------------------------

    def _read(
        self,
        starts: dict[int, int],
        ends: dict[int, int],
        progress: ReplayProgress,
        *,
        as_of_ms: int | None = None,
        key: bytes | None = None,
    ) -> Iterator[tuple[list[Change], dict[int, int]]]:
        """Each polled batch's records of ``[starts, ends)`` and the partitions' next offsets."""
        return read_range(
            self.settings,
            self.settings.topic,
            starts,
            ends,
            progress,
            self._decode,
            as_of_ms=as_of_ms,
            key=key,
        )

    def _decode(self, raw: Any) -> Change | None:
        """The record's change as the live projector sees it, or ``None`` if it dead-letters it."""
        change = self.reader.read(raw)
        return None if type(change) is Refusal else change  # type: ignore[return-value]

    def _ends(self, as_of_ms: int | None) -> dict[int, int]:
        """Every partition's end offset now, or its first offset at or after ``as_of_ms``."""
        ends = end_offsets(self.settings, self.settings.topic)
        if not ends:
            raise TopicError(f"topic {self.settings.topic!r} does not exist")
        if as_of_ms is None:
            return ends
        consumer = KafkaConsumer(**self.settings.kafka_client_options(), enable_auto_commit=False)
        try:
            tps = [TopicPartition(self.settings.topic, p) for p in ends]
            found = consumer.offsets_for_times({tp: as_of_ms for tp in tps})
        except KafkaError as exc:
            raise TopicError(f"offsets_for_times on {self.settings.topic!r} failed: {exc}") from exc
        finally:
            consumer.close()
        for tp, hit in found.items():
            # No record at or after the time (some brokers answer timestamp -1
            # instead of nothing): the whole partition is older, keep its end.
            if hit is not None and hit.timestamp >= 0:
                ends[tp.partition] = min(ends[tp.partition], hit.offset)
        return ends

    def _beginnings(self, ends: dict[int, int]) -> dict[int, int]:
        return beginning_offsets(self.settings, self.settings.topic, list(ends))

    # -- Redis ---------------------------------------------------------------------------

    def _apply(self, projection: RedisProjection, records: list[Change]) -> ApplyResult:
        try:
            return projection.apply(records)
        except redis.RedisError as exc:
            raise ReadModelError(
                f"applying to Redis failed: {exc}; run the same replay again to resume"
            ) from exc

    def _redis_call(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except redis.RedisError as exc:
            raise ReadModelError(f"Redis failed during a replay: {exc}") from exc

    def _mark(self, namespace: str, **fields: str) -> None:
        key = ReadModelKeys(namespace).rebuild()
        mapping: dict[str | bytes, str | bytes] = dict(fields.items())
        self._redis_call(lambda: self.redis.hset(key, mapping=mapping))  # type: ignore[arg-type]

    def has_keys(self, namespace: str) -> bool:
        """Whether ``namespace`` holds any key."""
        pattern = ReadModelKeys(namespace).all_pattern()
        pointer = active_namespace_key(self.settings.topic).encode()
        return bool(
            self._redis_call(
                lambda: any(k != pointer for k in self.redis.scan_iter(match=pattern, count=1000))
            )
        )

    def _home_redis(self) -> redis.Redis:
        return self.redis if self._is_home() else redis.Redis.from_url(self.settings.redis_url)

    def _is_home(self) -> bool:
        """Whether the replay writes to the Redis readers use (``settings.redis_url``)."""
        kwargs = self.redis.connection_pool.connection_kwargs
        home = redis.Redis.from_url(self.settings.redis_url).connection_pool.connection_kwargs
        return all(kwargs.get(k) == home.get(k) for k in ("host", "port", "db", "path"))
