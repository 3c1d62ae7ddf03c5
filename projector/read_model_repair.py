"""The read model heals itself: what the projector does when Redis lost state.

Loss detection (the marker):

* Every namespace a live projector applies to has a *generation* key
  (:meth:`~chatlog.keys.ReadModelKeys.generation`, ``<token>:<created ms>``),
  written once the namespace is known complete: at once on a namespace that
  already had one, that a finished rebuild filled (its applied positions
  exist), or that is new to a group that never committed (the live
  projection fills it from the beginning of the log); after rebuilding it
  from the log on one that lost its keys (a flush, a restart without
  persistence, its keys deleted), or that a repair left half-built. The
  apply script refuses every call while the key is missing, so nothing is
  applied to a namespace that lost its past; the projector then repairs.
* Per session, the meta hash's ``count`` must equal the list's length, and a
  list must not exist without its meta. The apply script checks both before
  applying a session's events (a *hole*: the session is rebuilt alone, then
  the batch is applied again); readers check the same in their read.

Repairs run in the projector's loop, so nothing else of this worker is
applied meanwhile, while the producers keep appending to Kafka. A namespace
repair sets the namespace's *repairing* key (with an expiry the repair keeps
pushing, so a crashed repairer does not block readers for ever), and that key
also elects one repairer among a group's workers; readers of the namespace
wait, then raise :class:`~chatlog.errors.ReadModelRepairingError`. A reader
that finds a hole adds the session to the namespace's repair-request set,
which the projector drains now and then: it checks each session itself and
rebuilds only those that are incomplete, from the log.

On a Redis Cluster the generation key lives on one primary, so it only says
that primary lost its data. Every other primary's loss shows as missing *slot
markers* (:mod:`chatlog.projector.cluster_projection`): the apply call to a
lost slot applies nothing, and :meth:`ReadModelRepair.check` probes one known
slot per primary now and then, so a primary that lost its data is found
without a write to it. Either way the namespace is rebuilt in place, as after
a flush: first every user's session index is filled again from the sessions'
meta hashes (a user's index key may have lived on the lost primary while the
user's sessions did not, and replaying the log skips those sessions' events,
so it would not add them back; the replay then removes again what its
``UserDeleted`` events removed), then the log is replayed (the lost sessions'
events apply, the others are skipped), then each known slot gets its marker
back. The generation is deleted while this runs, so a repairer that dies
half-way leaves a namespace the next one repairs again.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

import redis

from chatlog.errors import ReadModelError
from chatlog.keys import META_DELETED, META_EXPIRED, META_OWNER, META_UPDATED, ReadModelKeys
from chatlog.projector.checkpoint_replay import replay_checkpoints
from chatlog.projector.cluster_projection import read_known_bitmap, read_known_slots, slots_of
from chatlog.projector.lag import consumer_lag
from chatlog.projector.replay import Replayer, ReplayProgress
from chatlog.redis_clients import is_cluster
from chatlog.session_integrity import INTEGRITY_FIELDS, has_hole
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.projector.metrics import ProjectorMetrics
    from chatlog.projector.stats import ProjectorStats

log = logging.getLogger("chatlog.projector")

#: How long the repairing key outlives the last sign of life of its repairer.
REPAIRING_TTL_MS = 30_000
#: How often an idle (or busy) worker looks for a lost namespace and drains
#: readers' repair requests, besides what its batches detect.
CHECK_INTERVAL_S = 0.25
#: Most repair requests drained at once.
REQUESTS_PER_CHECK = 100
#: Probes between two groupings of the known slots by primary (a topology change
#: is picked up within this many probes, besides a changed bitmap).
PLAN_PROBES = 40
#: Commands per pipeline when a cluster repair walks every session or slot.
_CHUNK = 500


class ReadModelRepair:
    """Detects and repairs lost read-model state for one projector worker.

    Args:
        settings: The worker's settings (topic, checkpoint namespace, TTL).
        client: Redis of the read model.
        stats: The worker's totals (repairs are counted there too).
        metrics: Prometheus metrics, if any.
        stop: The worker's stop event (waits end when it is set).
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        stats: ProjectorStats,
        metrics: ProjectorMetrics | None,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.client = client
        self.stats = stats
        self.metrics = metrics
        self._stop = stop
        self._checked_at = 0.0
        # Namespaces this worker saw with a generation: one missing later was lost.
        self._seen: set[str] = set()
        self._cluster = is_cluster(client)
        # Which known slot of each primary the next probe checks (they take turns).
        self._probes = 0
        # The known-slots bitmap last probed, and its slots grouped by primary.
        self._probe_plan: tuple[bytes, list[list[int]]] | None = None
        #: Whether a namespace repair is running now (the worker's readiness).
        self.repairing = False

    # -- the namespace -------------------------------------------------------

    def ensure_generation(self, namespace: str) -> bool:
        """Make sure ``namespace`` has a generation, repairing it first if it lost its keys.

        Returns whether a repair (by this worker or another) was needed.

        Raises:
            redis.ConnectionError, redis.TimeoutError: Redis is away (the caller retries).
            ChatLogError: the log could not be read (the caller retries).
        """
        keys = ReadModelKeys(namespace)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(keys.generation())
        pipe.exists(keys.positions())
        pipe.hget(keys.rebuild(), "state")
        pipe.exists(keys.repairing())
        pipe.exists(keys.known_slots())
        has_generation, has_positions, rebuild_state, repairing, has_slots = pipe.execute()
        if has_generation:
            self._seen.add(namespace)
            return False
        if repairing:
            # Another worker repairs (a cluster repair deletes the generation first).
            self._wait_for_generation(keys)
            return True
        # Positions without an unfinished rebuild: filled by a rebuild (or by a
        # chatlog before generations), complete. A repair that failed half-way
        # leaves its rebuild "building": that one is repaired again. On a
        # cluster the positions may live on a primary that kept its data while
        # the generation's lost it: the known-slots bitmap shares the
        # generation's slot, so only with it is the namespace known complete.
        complete = has_positions and rebuild_state != b"building"
        if self._cluster and not has_slots:
            complete = False
        if complete or (namespace not in self._seen and not self._group_applied_before()):
            # A namespace new to a group that never committed is filled from
            # the beginning of the log by the live projection itself.
            self.client.set(keys.generation(), _generation(), nx=True)
            self._seen.add(namespace)
            return False
        self.repair_namespace(namespace, reason="its generation key and applied positions are gone")
        self._seen.add(namespace)
        return True

    def _group_applied_before(self) -> bool:
        """Whether the projector's group committed offsets on the topic (it applied events)."""
        return any(p.committed for p in consumer_lag(self.settings).partitions)

    def repair_namespace(self, namespace: str, *, reason: str) -> None:
        """Rebuild ``namespace`` in place from the log, then give it a new generation.

        Only one worker repairs (the one that sets the repairing key); the
        others wait for the generation to come back.
        """
        keys = ReadModelKeys(namespace)
        token = uuid.uuid4().hex
        if not self.client.set(keys.repairing(), token, nx=True, px=REPAIRING_TTL_MS):
            self._wait_for_generation(keys)
            return
        log.warning(
            "read model namespace %r lost its keys (%s): rebuilding it in place from the log; "
            "readers of it wait or get ReadModelRepairingError meanwhile",
            namespace,
            reason,
            extra={"namespace": namespace, "scope": "namespace"},
        )
        started = time.monotonic()
        self.repairing = True
        if self.metrics is not None:
            self.metrics.repair_started("namespace", namespace)

        # Checkpoints are replayed into the configured namespace: its readers wait too.
        flags = [keys.repairing()]
        if namespace != self.settings.namespace:
            flags.append(ReadModelKeys(self.settings.namespace).repairing())
            self.client.set(flags[1], token, px=REPAIRING_TTL_MS)

        def alive(_progress: ReplayProgress) -> None:
            for flag in flags:
                self.client.pexpire(flag, REPAIRING_TTL_MS)
            if self.metrics is not None:
                self.metrics.repair_progressed()

        try:
            # A leftover rebuild marker would make the rebuild resume instead of
            # starting from the beginning of the log.
            self.client.delete(keys.rebuild())
            if self._cluster:
                # Until the end the namespace is incomplete, whoever looks.
                self.client.delete(keys.generation())
                self._reindex_users(keys)
            progress = Replayer(self.settings, redis_client=self.client).rebuild(
                namespace, on_progress=alive
            )
            # Checkpoints live in the configured namespace, which a flush took too;
            # replaying them again is idempotent where they were not lost.
            checkpoints = replay_checkpoints(
                self.settings, redis_client=self.client, on_progress=alive
            )
            if self._cluster:
                self._restore_markers(keys)
            self.client.set(keys.generation(), _generation())
        finally:
            for flag in flags:
                if self.client.get(flag) == token.encode():
                    self.client.delete(flag)
            self.repairing = False
        seconds = time.monotonic() - started
        self.stats.repair_seconds += seconds
        self._count("namespace")
        log.warning(
            "read model namespace %r repaired in %.1fs: %d events applied, %d checkpoint events",
            namespace,
            seconds,
            progress.applied,
            checkpoints.applied,
            extra={"namespace": namespace, "scope": "namespace"},
        )

    def repair_lost_slots(self, namespace: str, slots: list[int]) -> None:
        """Redis Cluster: hash slots of ``namespace`` lost their keys; rebuild it in place."""
        shown = ", ".join(map(str, slots[:8])) + (", ..." if len(slots) > 8 else "")
        self.repair_namespace(
            namespace,
            reason=f"the markers of hash slots {shown} are gone (their primary lost its data)",
        )

    def _count(self, scope: str) -> None:
        if scope == "namespace":
            self.stats.namespace_repairs += 1
        else:
            self.stats.session_repairs += 1
        if self.metrics is not None:
            self.metrics.repaired(scope)

    def _reindex_users(self, keys: ReadModelKeys) -> None:
        """Add every live session to its owner's index again, scored by its last activity.

        ``ZADD GT`` never lowers a score; what ``UserDeleted`` removed, the
        replay that follows removes again (its events come back in log order).
        """
        metas = [
            k for k in self.client.scan_iter(match=keys.session_pattern(), count=1000)
            if keys.owns(k)
        ]
        fields = [META_OWNER, META_UPDATED, META_DELETED, META_EXPIRED]
        for start in range(0, len(metas), _CHUNK):
            chunk = metas[start : start + _CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for meta in chunk:
                pipe.hmget(meta, fields)
            replies = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            for meta, (owner, updated, deleted, expired) in zip(chunk, replies, strict=True):
                if owner is None or updated is None or deleted is not None or expired is not None:
                    continue
                text = meta.decode() if isinstance(meta, bytes) else meta
                session = ReadModelKeys.session_of(text)
                pipe.zadd(keys.user_sessions(owner.decode()), {session: int(updated)}, gt=True)
            pipe.execute()

    def _restore_markers(self, keys: ReadModelKeys) -> None:
        """Give every slot the bitmap knows its marker (one whose sessions all left the log too)."""
        slots = sorted(read_known_slots(self.client, keys)[1])
        for start in range(0, len(slots), _CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for slot in slots[start : start + _CHUNK]:
                pipe.set(keys.slot_marker(slot), "1", nx=True)
            pipe.execute()

    def lost_slots(self, namespace: str) -> list[int]:
        """Redis Cluster: known slots whose marker is gone, probing one known slot per primary.

        A primary that lost its data lost every marker it held, so one probe
        per primary finds it; the primaries' slots take turns, so a single
        slot's loss is found too, in time (and at once by a write to it).
        """
        keys = ReadModelKeys(namespace)
        _has_generation, bitmap = read_known_bitmap(self.client, keys)
        self._probes += 1
        cached = self._probe_plan
        if cached is None or cached[0] != bitmap or self._probes % PLAN_PROBES == 0:
            # Grouping every known slot by primary costs milliseconds: done when
            # the bitmap changed, and now and then for a changed topology.
            manager = self.client.nodes_manager  # type: ignore[attr-defined]
            grouped: dict[str, list[int]] = {}
            for slot in sorted(slots_of(bitmap)):
                grouped.setdefault(manager.get_node_from_slot(slot).name, []).append(slot)
            cached = self._probe_plan = (bitmap, list(grouped.values()))
        by_node = cached[1]
        if not by_node:
            return []
        probed = [slots[self._probes % len(slots)] for slots in by_node]
        pipe = self.client.pipeline(transaction=False)
        for slot in probed:
            pipe.exists(keys.slot_marker(slot))
        return [slot for slot, found in zip(probed, pipe.execute(), strict=True) if not found]

    def _wait_for_generation(self, keys: ReadModelKeys) -> None:
        while not self._stop.is_set():
            if self.client.exists(keys.generation()) and not self.client.exists(keys.repairing()):
                return
            if not self.client.exists(keys.repairing()):
                # The repairer died (its key expired): the caller's retry repairs.
                raise ReadModelError(f"the repair of namespace {keys.namespace!r} stopped")
            self._stop.wait(0.1)

    # -- sessions --------------------------------------------------------------

    def repair_sessions(self, namespace: str, session_ids: list[str]) -> None:
        """Rebuild each session alone from its partition and put it in place."""
        replayer = Replayer(self.settings, redis_client=self.client)
        for session_id in dict.fromkeys(session_ids):
            log.warning(
                "session %r of read model namespace %r lost a key (its meta and messages "
                "disagree): rebuilding it from the log",
                session_id,
                namespace,
                extra={"namespace": namespace, "session_id": session_id, "scope": "session"},
            )
            done = replayer.rebuild_session(session_id, namespace)
            self._count("session")
            log.warning(
                "session %r of namespace %r repaired: %d messages",
                session_id,
                namespace,
                done.messages,
                extra={"namespace": namespace, "session_id": session_id, "scope": "session"},
            )

    def incomplete(self, namespace: str, session_ids: list[str]) -> list[str]:
        """Those of ``session_ids`` whose meta and list disagree now."""
        keys = ReadModelKeys(namespace)
        # On a cluster the sessions span slots: no MULTI (each session's three
        # reads are one node's, in order, on one connection).
        pipe = self.client.pipeline(transaction=not self._cluster)
        for session_id in session_ids:
            pipe.hmget(keys.meta(session_id), list(INTEGRITY_FIELDS))
            pipe.exists(keys.meta(session_id))
            pipe.llen(keys.messages(session_id))
        replies = pipe.execute()
        return [
            session_id
            for n, session_id in enumerate(session_ids)
            if has_hole(replies[3 * n], bool(replies[3 * n + 1]), int(replies[3 * n + 2]))
        ]

    # -- now and then ------------------------------------------------------------

    def check(self, namespace: str) -> None:
        """At most every :data:`CHECK_INTERVAL_S`: a lost namespace, then readers' requests.

        Raises:
            redis.ConnectionError, redis.TimeoutError, ChatLogError: as :meth:`ensure_generation`.
        """
        now = time.monotonic()
        if now - self._checked_at < CHECK_INTERVAL_S:
            return
        self._checked_at = now
        if self.ensure_generation(namespace):
            return
        if self._cluster:
            lost = self.lost_slots(namespace)
            if lost:
                self.repair_lost_slots(namespace, lost)
                return
        requests = ReadModelKeys(namespace).repair_requests()
        asked = [
            s.decode() if isinstance(s, bytes) else str(s)
            for s in self.client.spop(requests, REQUESTS_PER_CHECK) or []
        ]
        if asked:
            damaged = self.incomplete(namespace, asked)
            if damaged:
                self.repair_sessions(namespace, damaged)


def _generation() -> str:
    return f"{uuid.uuid4().hex}:{int(time.time() * 1000)}"
