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

    @staticmethod
    def session_of(meta_key: str) -> str:
        """The session id inside a meta or messages key."""
        start = meta_key.index("{") + 1
        return meta_key[start : meta_key.rindex("}")]


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
