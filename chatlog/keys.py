"""The Redis key layout of the read model, built in this one place.

It lives in the base layer (not in ``projector/``) because both the writer
(the projector) and the readers (``histories/``) need it, and ``histories``
must not import the projector.

Every key of one session carries the session id as a Redis Cluster hash tag
(``{...}``), so a session's keys share one slot and one Lua script can
update them atomically.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadModelKeys:
    """Key builder for one namespace (``chatlog:v1`` by default)."""

    namespace: str

    def messages(self, session_id: str) -> str:
        """List of serialized messages of a session, in log order."""
        return f"{self.namespace}:s:{{{session_id}}}:msgs"

    def meta(self, session_id: str) -> str:
        """Hash of a session's owner, partition, last applied offset, counts and timestamps."""
        return f"{self.namespace}:s:{{{session_id}}}:meta"

    def user_sessions(self, user_id: str) -> str:
        """Sorted set of a user's sessions scored by last activity (epoch milliseconds)."""
        return f"{self.namespace}:u:{{{user_id}}}:sessions"

    def session_pattern(self) -> str:
        """SCAN pattern matching every session meta key of the namespace."""
        return f"{self.namespace}:s:*:meta"

    def all_pattern(self) -> str:
        """SCAN pattern matching every key of the namespace."""
        return f"{self.namespace}:*"

    def positions(self) -> str:
        """Hash of partition -> next offset applied to this namespace (every writer keeps it).

        Everything of a partition below its recorded offset is applied, so a
        writer that starts a partition at or below it leaves no gap; replay
        resumes from it.
        """
        return f"{self.namespace}:positions"

    def rebuild(self) -> str:
        """Hash describing the rebuild that fills this namespace (state, as-of time, totals)."""
        return f"{self.namespace}:rebuild"

    def generation(self) -> str:
        """String ``<token>:<created ms>`` naming the current life of this namespace.

        Written once the namespace is known complete (a projector's first
        apply, the end of a repair); its absence under a running projector
        means the namespace lost its keys. The apply script refuses batches
        while it is missing.
        """
        return f"{self.namespace}:generation"

    def repairing(self) -> str:
        """String present (with an expiry the repairer refreshes) while the namespace is rebuilt.

        Readers of the namespace wait, then raise, instead of serving what the
        repair has not reached yet.
        """
        return f"{self.namespace}:repairing"

    def repair_requests(self) -> str:
        """Set of session ids a reader found incomplete, drained by the projector."""
        return f"{self.namespace}:repair-requests"

    @staticmethod
    def session_of(meta_key: str) -> str:
        """The session id inside a meta or messages key."""
        start = meta_key.index("{") + 1
        return meta_key[start : meta_key.rindex("}")]

    # -- LangGraph checkpoints, one set of keys per thread ------------------

    def thread(self, thread_id: str) -> CheckpointKeys:
        """Every key of one checkpoint thread, in the order the checkpoint scripts take them."""
        prefix = f"{self.namespace}:t:{{{thread_id}}}"
        return CheckpointKeys(
            meta=f"{prefix}:meta",
            index=f"{prefix}:cps",
            namespaces=f"{prefix}:nss",
            checkpoints=f"{prefix}:cp",
            versions=f"{prefix}:cpv",
            blobs=f"{prefix}:blobs",
            writes=f"{prefix}:w",
            write_index=f"{prefix}:wi",
        )

    def thread_pattern(self) -> str:
        """SCAN pattern matching every checkpoint thread's meta key of the namespace."""
        return f"{self.namespace}:t:*:meta"


@dataclass(frozen=True, slots=True)
class CheckpointKeys:
    """The keys of one LangGraph thread; the thread id is their hash tag (one slot).

    Attributes:
        meta: Hash with the tracking position (``partition``, ``offset``).
        index: Sorted set (all scores 0) of ``<checkpoint_ns> NUL <checkpoint_id>``, by lex.
        namespaces: Sorted set of checkpoint namespaces scored by first appearance.
        checkpoints: Hash of stored checkpoints by index member.
        versions: Hash of the blob fields each checkpoint refers to, by index member.
        blobs: Hash of channel values by namespace, channel and version (NUL-joined).
        writes: Hash of pending writes by namespace, checkpoint, task and index (NUL-joined).
        write_index: Sorted set (all scores 0) of the ``writes`` fields, by lex order.
    """

    meta: str
    index: str
    namespaces: str
    checkpoints: str
    versions: str
    blobs: str
    writes: str
    write_index: str

    def all(self) -> list[str]:
        """Every key, in script order (``meta`` first)."""
        return [
            self.meta,
            self.index,
            self.namespaces,
            self.checkpoints,
            self.versions,
            self.blobs,
            self.writes,
            self.write_index,
        ]


#: Fields of the session meta hash.
META_OWNER = "owner"
META_PARTITION = "partition"
META_OFFSET = "offset"
META_COUNT = "count"
META_CREATED = "created_at"
META_UPDATED = "updated_at"
#: Set (to the deletion's event time) while the meta hash is a deleted session's tombstone.
META_DELETED = "deleted"
#: The session's own idle TTL in milliseconds (``SessionTtlSet``); absent: the default.
META_TTL = "ttl_ms"
#: When the session's keys expire (epoch milliseconds), ``0`` when they never do.
META_EXPIRY = "expiry"


def active_namespace_key(topic: str) -> str:
    """Return the key naming the namespace readers and the projector use for ``topic``'s log.

    One pointer per event topic, outside every namespace (so dropping a
    namespace never drops it). When it is absent, ``Settings.namespace`` is
    the active namespace; ``chatlog replay rebuild --switch`` sets it.
    """
    return f"chatlog:active-namespace:{topic}"
