"""Whether a session's keys in the read model agree: the per-session half of loss detection.

The projector writes a session's meta hash and messages list in one script,
and the meta's ``count`` is the list's length. When they disagree, a key was
lost behind the projector's back (an eviction, a stray ``DEL``): the session
has a *hole*. The projector (before applying to it) and readers (in their one
round trip) check the same rule, defined here once; the apply script's Lua
check (``projector/redis_projection.lua``) mirrors it.
"""

from __future__ import annotations

from chatlog.keys import META_COUNT, META_DELETED, META_EXPIRED

#: The meta fields the check reads, in :func:`has_hole`'s order.
INTEGRITY_FIELDS = (META_COUNT, META_DELETED, META_EXPIRED)


def has_hole(fields: list[bytes | None], has_meta: bool, length: int) -> bool:
    """Whether a session's meta (:data:`INTEGRITY_FIELDS`) and its list length disagree.

    A tombstone (``deleted``, or ``expired``: its list lingers briefly, then
    goes) has no list to check; a list without meta, or a ``count`` other
    than the list's length, is a hole.
    """
    count, deleted, expired = fields
    if deleted is not None or expired is not None:
        return False
    if not has_meta:
        return length > 0
    return int(count or 0) != length
