"""Applying a batch on a Redis Cluster: one script call per slot group, the user index after.

A script on a cluster may only touch keys of the node it runs on, and
redis-py routes an ``EVALSHA`` by its declared keys, which must share a slot.
The apply script is the standalone one (:mod:`chatlog.projector.redis_projection`),
called differently:

1. **Slot groups.** The batch's sessions are grouped by hash slot (a session's
   keys share one, ``{session}``); each group is one ``EVALSHA`` declaring the
   group's message, meta, index-outbox, message-id and verdict keys, so Redis checks they are local
   (during a slot migration a call gets ``ASK`` or ``TRYAGAIN`` instead of
   half-running). Each node's calls go out on one connection, all nodes at
   once; a redirected call is resent through redis-py, which follows
   ``MOVED``/``ASK``. The per-session work is unchanged.
2. **The user index.** ``<ns>:u:{user}:sessions`` lives in the user's slot,
   usually on another node, so with an empty user-key prefix the script queues
   each index change in the session's outbox (``<ns>:s:{session}:ix``, the
   session's slot) and returns every queued entry, a crash's leftovers too.
   After every group applied, the entries go to the user index (``ZADD GT`` /
   ``ZREM``, sent per node), then the outboxes are trimmed by what was read
   and the batch's ``UserDeleted`` run (``ZREMRANGEBYSCORE``): the order the
   standalone script keeps within its one call.
3. **Positions last.** The namespace's applied positions advance only after
   every group, index change and user deletion of the batch applied.

**Loss detection per slot** (issue 14 on a cluster). The namespace's
generation key lives in one slot, so it cannot tell whether another primary
lost its data. Each slot the namespace writes to holds a *slot marker*
(:meth:`~chatlog.keys.ReadModelKeys.slot_marker`, in that slot through a
precomputed hash tag), and the namespace's *known slots* bitmap
(:meth:`~chatlog.keys.ReadModelKeys.known_slots`, in the generation's slot)
records the slots written to. A live projector's call declares its slot's
marker first: on a known slot (:data:`SLOT_CHECK`) a missing marker means the
slot lost its keys, and the call applies nothing (``ApplyResult.lost_slots``);
on a slot the bitmap does not know (read from Redis, with the generation, on
every slot this process has not seen known) the call creates the marker
(:data:`SLOT_NEW`), and the slot's bit is set after the batch's groups
applied, before its positions. Replays and rebuilds create markers and set
bits without checking (:data:`SLOT_WRITE`).

Each write of messages or index changes ends, per primary, with
``WAIT <its replicas> <REPLICA_WAIT_MS>`` on the same connection: the batch
counts as applied (and its Kafka offsets get committed) only once the
primaries' replicas hold it, so a replica promoted after a primary dies
(asynchronous replication) has every committed batch.

A crash anywhere in between is redone by the redelivered batch: per-session
offsets skip what applied, the outboxes still hold what the index missed, and
every index step is idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from chatlog.errors import ReadModelError
from chatlog.keys import CLUSTER_SLOTS, ReadModelKeys
from chatlog.projector.protocol import (
    INDEX_ADD,
    LOST_SLOT,
    NOTE_INDEX,
    NOTE_LOST,
    SLOT_CHECK,
    SLOT_NEW,
    SLOT_WRITE,
)
from chatlog.projector.raw_pipeline import Command, InFlight

#: Errors of a cluster changing under the client (failover, resharding, a node
#: gone): the batch is safe to send again once the topology settles.
TOPOLOGY_ERRORS: tuple[type[Exception], ...] = (
    ClusterDownError, TryAgainError, MovedError, AskError, SlotNotCoveredError,
    ClusterError, RedisClusterException,
)

#: How long a batch waits for the replicas of each primary to acknowledge it.
#: A replica that does not answer in time (down, far behind) does not stop the
#: projector: the batch then rests on its primary alone, as without replicas.
REPLICA_WAIT_MS = 1000

#: Replies that mean "not here (yet)": redis-py resends those itself.
_REDIRECTS = (MovedError, AskError, TryAgainError)

_NOTE_INDEX = NOTE_INDEX.encode()
_INDEX_ADD = INDEX_ADD.encode()
_NOTE_LOST = NOTE_LOST.encode()
#: What a batch that found lost state replies (PendingApply reads it as a loss).
_LOST_SLOTS_REPLY = [0, 0, 0, _NOTE_LOST, LOST_SLOT.encode()]
_LOST_GENERATION_REPLY = [0, 0, 0, _NOTE_LOST, b""]

# Reads the generation and the known-slots bitmap at once (they share a slot).
_KNOWN_SLOTS = """
return {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[2]) or ''}
"""


def slots_of(bitmap: bytes) -> set[int]:
    """The slots whose bit is set in a known-slots bitmap (``SETBIT`` order: high bit first)."""
    return {
        8 * at + bit
        for at, byte in enumerate(bitmap[: CLUSTER_SLOTS // 8])
        if byte
        for bit in range(8)
        if byte & (0x80 >> bit)
    }


def read_known_bitmap(client: Any, keys: ReadModelKeys) -> tuple[bool, bytes]:
    """Whether the namespace has its generation, and its known-slots bitmap (one call)."""
    exists, bitmap = client.eval(_KNOWN_SLOTS, 2, keys.generation(), keys.known_slots())
    return bool(exists), bytes(bitmap)


def read_known_slots(client: Any, keys: ReadModelKeys) -> tuple[bool, set[int]]:
    """Whether the namespace has its generation, and the slots its bitmap knows (one call)."""
    exists, bitmap = read_known_bitmap(client, keys)
    return exists, slots_of(bitmap)


class ClusterApply:
    """Runs the apply script on a Redis Cluster for one namespace (see the module doc)."""

    def __init__(
        self,
        client: redis.Redis,
        source: str,
        keys: ReadModelKeys,
        *,
        per_call: int,
        detect_loss: bool = False,
    ) -> None:
        # redis-py's cluster client is untyped: Any, as the rest of chatlog sees redis.Redis.
        self.client: Any = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.keys = keys
        self.per_call = per_call
        #: Check slot markers (the live projector) rather than only write them.
        self.detect_loss = detect_loss
        #: Slots the known-slots bitmap held when last read, or this process set.
        self.known: set[int] = set()
        prefix, suffix = keys.index_outbox("\x00").split("\x00")
        meta_prefix = keys.meta("\x00").split("\x00")[0]
        if prefix != meta_prefix:
            raise AssertionError("the index outbox must share the meta key's prefix")
        # The user index templates as the script reads them on a cluster: no
        # user prefix, the outbox suffix in the user suffix's place.
        self.templates: list[str] = []
        for key in (keys.messages, keys.meta):
            self.templates += key("\x00").split("\x00")
        self.templates += ["", suffix]
        #: The message-id and verdict key templates (``ARG_IDS_PREFIX`` ..).
        self.id_templates: list[str] = []
        for key in (keys.message_ids, keys.verdicts):
            self.id_templates += key("\x00").split("\x00")

    def refresh(self) -> None:
        """Reload the slot map from any node that answers (after a node failed)."""
        # No node may answer yet: the next retry refreshes again.
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            self.client.nodes_manager.initialize()

    def pending(
        self,
        sessions: list[list[Any]],
        users: list[Any],
        advance: Mapping[int, int],
        head: Sequence[Any],
    ) -> ClusterPending:
        """The batch's calls, made (not sent): ``head`` is the ARGV after the templates."""
        return ClusterPending(self, sessions, users, advance, head)


class ClusterPending:
    """A batch's slot-group calls, run when their replies are asked for.

    Running on :meth:`replies` (not at creation) keeps the worker's contract:
    a failed read sends the whole batch again, and batches run in the order
    their replies are read.
    """

    def __init__(
        self,
        apply: ClusterApply,
        sessions: list[list[Any]],
        users: list[Any],
        advance: Mapping[int, int],
        head: Sequence[Any],
    ) -> None:
        self.apply = apply
        self.users = users
        self.advance = dict(advance)
        self.head = head
        keys = apply.keys
        slot = apply.client.keyslot
        groups: dict[int, list[list[Any]]] = {}
        for args in sessions:
            groups.setdefault(slot(keys.meta(args[0])), []).append(args)
        #: Session ids in reply order: :meth:`replies` merges the calls' replies
        #: into one whose notes number the sessions 1.. in this order.
        self.order: list[str] = []
        self._calls: list[tuple[list[str], list[Any]]] = []
        self._firsts: list[int] = []  # each call's first session's place in ``order``
        per_call = apply.per_call
        #: Where each call's ARGV holds its slot mode (chosen when the batch runs).
        self._mode_at = len(apply.templates) + len(head) + 2 + len(apply.id_templates)
        self._slots: list[int] = []
        #: Slots whose markers were found missing (``ApplyResult.lost_slots``).
        self.lost_slots: list[int] = []
        for group_slot, members in groups.items():
            for start in range(0, len(members), per_call):
                part = members[start : start + per_call]
                declared: list[str] = [keys.slot_marker(group_slot)]
                argv: list[Any] = [
                    *apply.templates, *head, "", 0, *apply.id_templates, SLOT_WRITE, 0
                ]
                for args in part:
                    sid = args[0]
                    declared += (
                        keys.messages(sid), keys.meta(sid), keys.index_outbox(sid),
                        keys.message_ids(sid), keys.verdicts(sid),
                    )
                    argv += args
                self._calls.append((declared, argv))
                self._slots.append(group_slot)
                self._firsts.append(len(self.order))
                self.order.extend(args[0] for args in part)

    def replies(self) -> list[Any]:
        """Run the batch; the session calls' replies with the index entries taken out.

        Raises:
            redis.ConnectionError, redis.TimeoutError: a node could not be reached.
            ReadModelError: the cluster's topology is changing (retry), or any other failure.
        """
        try:
            return self._run()
        except (redis.ConnectionError, redis.TimeoutError):
            # A node is gone: ask the cluster for its slot map again, or the
            # retry goes to the dead node (a replica may have taken over).
            self.apply.refresh()
            raise
        except TOPOLOGY_ERRORS as exc:
            self.apply.refresh()
            raise ReadModelError(
                f"the Redis Cluster is changing (failover or resharding), retry: {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise ReadModelError(f"applying a batch to the Redis Cluster failed: {exc}") from exc

    def _modes(self) -> set[int] | None:
        """Set each call's slot mode; the slots new to the namespace, ``None`` if it lost them all.

        ``None``: the generation is gone (the namespace lost its keys, or this
        slot's primary lost the bitmap): nothing is sent, the caller repairs.
        """
        apply = self.apply
        if not apply.detect_loss:
            for _declared, argv in self._calls:
                argv[self._mode_at] = SLOT_WRITE
            return set(self._slots) - apply.known
        unseen = set(self._slots) - apply.known
        if unseen:
            # Only for slots this process has not seen known: the bitmap is the
            # truth (another worker may have written to the slot since).
            has_generation, known = read_known_slots(apply.client, apply.keys)
            if not has_generation:
                return None
            apply.known |= known
        for (_declared, argv), group_slot in zip(self._calls, self._slots, strict=True):
            argv[self._mode_at] = SLOT_CHECK if group_slot in apply.known else SLOT_NEW
        return set(self._slots) - apply.known

    def _run(self) -> list[Any]:
        apply = self.apply
        keys = apply.keys
        new_slots = self._modes() if self._calls else set()
        if new_slots is None:
            return [_LOST_GENERATION_REPLY]
        replies = self._scripts(self._calls)
        lost = {
            group_slot
            for group_slot, reply in zip(self._slots, replies, strict=True)
            if len(reply) == 5 and reply[3] == _NOTE_LOST
        }
        if lost:
            # What the other groups applied is skipped when the batch is sent
            # again after the repair; nothing moves the positions now.
            self.lost_slots = sorted(lost)
            # Asked again after the repair: the bitmap it leaves is the truth.
            apply.known -= lost
            return [_LOST_SLOTS_REPLY]
        if new_slots:
            # Known before the positions move: a later loss of these slots is a loss.
            known = keys.known_slots()
            home = apply.client.keyslot(known)
            _raise_first(self._by_node(
                [(home, ("SETBIT", known, s, 1)) for s in sorted(new_slots)], wait=True
            ))
            apply.known |= new_slots
        order = self.order
        index: dict[str, list[bytes]] = {}
        merged: list[Any] = [0, 0]
        for first, reply in zip(self._firsts, replies, strict=True):
            merged[0] += reply[0]
            merged[1] += reply[1]
            for k in range(2, len(reply), 3):
                at = first + reply[k]  # the session's number in ``order``, from 1
                if reply[k + 1] == _NOTE_INDEX:
                    index.setdefault(order[at - 1], []).append(reply[k + 2])
                else:
                    merged += (at, reply[k + 1], reply[k + 2])
        cleaned = [merged]
        slot = apply.client.keyslot
        if index:
            commands: list[tuple[int, Command]] = []
            for sid, got in index.items():
                for entry in got:
                    if entry[:1] == _INDEX_ADD:
                        score, _, user = entry[1:].partition(b" ")
                        key = keys.user_sessions(user.decode())
                        commands.append((slot(key), ("ZADD", key, "GT", int(score), sid)))
                    else:
                        key = keys.user_sessions(entry[1:].decode())
                        commands.append((slot(key), ("ZREM", key, sid)))
            _raise_first(self._by_node(commands, wait=True))
        if index or self.users:
            commands = []
            for sid, got in index.items():
                key = keys.index_outbox(sid)
                commands.append((slot(key), ("LTRIM", key, len(got), -1)))
            users = self.users
            for k in range(0, len(users), 2):
                key = keys.user_sessions(users[k])
                commands.append((slot(key), ("ZREMRANGEBYSCORE", key, "-inf", users[k + 1])))
            _raise_first(self._by_node(commands, wait=False))
        if self.advance:
            pairs: list[Any] = []
            for partition, offset in self.advance.items():
                pairs += (partition, offset)
            positions = keys.positions()
            argv = [
                *apply.templates, *self.head, positions, len(self.advance),
                *apply.id_templates, "", *pairs, 0,
            ]
            self._scripts([([positions], argv)])
        return cleaned

    def _scripts(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each call, sent per node; load the script where a node lacks it."""
        apply = self.apply
        slot = apply.client.keyslot
        commands = [
            (slot(declared[0]), ("EVALSHA", apply.sha, len(declared), *declared, *argv))
            for declared, argv in calls
        ]
        for attempt in (1, 2):
            replies = self._by_node(commands, wait=True)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                # A promoted replica or a new node has an empty script cache:
                # load it on every primary and send again (applying is idempotent).
                apply.client.script_load(apply.source)
                continue
            _raise_first(replies)
            return replies
        raise ReadModelError("applying a batch: the Redis Cluster keeps losing the apply script")

    def _by_node(self, commands: list[tuple[int, Command]], *, wait: bool) -> list[Any]:
        """Send each (slot, command) to its slot's primary, all nodes at once; replies in order.

        Each node's commands go out on one connection with the projector's
        raw pipeline (redis-py's cluster pipeline costs ~100 µs of Python per
        command); with ``wait``, each node's commands end with ``WAIT`` for its
        replicas (see the module doc). A command the node redirects (the slot
        moved or is moving: ``MOVED``, ``ASK``, ``TRYAGAIN``) is sent again
        through redis-py, which follows the redirection and updates its map.
        """
        client = self.apply.client
        manager = client.nodes_manager
        groups: dict[str, tuple[Any, list[int]]] = {}
        for number, (slot, _command) in enumerate(commands):
            node = manager.get_node_from_slot(slot)
            groups.setdefault(node.name, (node, []))[1].append(number)
        flights = []
        for node, numbers in groups.values():
            batch = [commands[n][1] for n in numbers]
            if wait and (count := _replica_count(manager, node)):
                batch.append(("WAIT", count, REPLICA_WAIT_MS))
            flights.append((numbers, InFlight(client.get_redis_connection(node), batch)))
        replies: list[Any] = [None] * len(commands)
        for numbers, flight in flights:
            for number, reply in zip(numbers, flight.replies(), strict=False):
                replies[number] = reply
        for number, reply in enumerate(replies):
            if isinstance(reply, _REDIRECTS):
                replies[number] = client.execute_command(*commands[number][1])
        return replies


def _replica_count(manager: Any, node: Any) -> int:
    """How many replicas ``node`` has in the client's slot map."""
    for nodes in manager.slots_cache.values():
        if nodes and nodes[0].name == node.name:
            return len(nodes) - 1
    return 0


def _raise_first(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
