"""The projection protocol, defined once: what the Python packs and the Lua unpacks.

The change reader emits operation codes, the apply step packs them into
script arguments, the Lua scripts switch on them and write the meta fields,
and :mod:`chatlog.projector.verify` folds the same operations on its own. All
of them take the codes, field names and argument offsets from here.

The meta field names are the read model's contract with its readers
(``histories/``, which must not import the projector), so they stay in the
base layer (:mod:`chatlog.keys`) and are only gathered here.

Every script lives in a ``.lua`` file beside the module that loads it
(shipped as package data) and declares the constants it uses at its top, in
``local NAME = value`` form. :data:`SCRIPT_CONSTANTS` is what each file must
declare; ``tests/unit/test_projection_protocol.py`` parses the files and
checks them against it.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from chatlog.keys import (
    META_COUNT,
    META_CREATED,
    META_DELETED,
    META_EXPIRED,
    META_EXPIRY,
    META_OFFSET,
    META_OWNER,
    META_PARTITION,
    META_TTL,
    META_UPDATED,
    VERDICT_APPLIED,
    VERDICT_CONFLICT,
    VERDICT_DUPLICATE,
    VERDICT_SHREDDED,
)
from chatlog.ttl import MAX_TTL_MS

# -- operation codes (Change.op) ------------------------------------------------

OP_APPEND: Final = "A"
OP_CLEAR: Final = "C"
OP_DELETE_SESSION: Final = "D"
OP_SET_TTL: Final = "T"
OP_DELETE_USER: Final = "U"
#: A conditional append (``MessagesAppended``): all of its messages or none.
OP_APPEND_IF: Final = "G"
#: A sealed event whose data key was destroyed (its subject was erased): it
#: changes nothing but the session's tracking position, so readers waiting
#: for it (read-your-writes) are not left waiting, and creates no session.
OP_SHREDDED: Final = "N"

#: Each operation code and the event type it stands for.
EVENT_TYPES: Final = {
    OP_APPEND: "MessageAppended",
    OP_CLEAR: "SessionCleared",
    OP_DELETE_SESSION: "SessionDeleted",
    OP_SET_TTL: "SessionTtlSet",
    OP_DELETE_USER: "UserDeleted",
    OP_APPEND_IF: "MessagesAppended",
    OP_SHREDDED: "Shredded",
}

# -- the apply script's reply: (session number, note, value) triples ------------

#: Value: how many of the session's events were skipped (the oldest).
NOTE_SKIPPED: Final = "S"
#: Value: the session's owner (comes before the session's rejections).
NOTE_OWNER: Final = "O"
#: Value: the offset of an event refused by ownership.
NOTE_REJECTED: Final = "R"
#: Value: the partition the session is tracked on (the session was not applied).
NOTE_PARTITION: Final = "P"
#: Value: the error that stopped the session.
NOTE_ERROR: Final = "E"
#: Value: the offset of an append whose message ids the session already holds (a verdict).
NOTE_DUPLICATE: Final = "K"
#: Value: the offset of a conditional append refused by its expected version (a verdict).
NOTE_CONFLICT: Final = "V"

# -- verdicts of conditional appends (the <ns>:s:{session}:verdicts hash) --------
# Field: the event's offset; value: chatlog.keys.VERDICT_*, the refusal followed
# by the message count the projector found. Writers read it to answer their caller.

#: How long a session's verdicts hash lives after its last verdict (one hour):
#: far longer than any writer waits (its read timeout), and bounded.
VERDICT_TTL_MS: Final = 3_600_000
#: How long an idle-expired session's tombstone is kept after the projector found it expired (7
#: days): redelivered records older than it are skipped, not revived, within that window.
EXPIRED_TOMBSTONE_MS: Final = 7 * 24 * 3_600_000
#: How long an expired session's messages and ids stay (hidden from readers) after
#: the projector found it expired (5 minutes): a later record of the log inside
#: the session's window (a replay's next batch) continues it, as the fold does.
EXPIRED_GRACE_MS: Final = 300_000

# -- loss detection (issue 14): notes of the damage checks -----------------------
# KEYS: empty (no check: replays and rebuilds), or KEYS[KEY_GENERATION], the
# namespace's generation key (ReadModelKeys.generation): while it is missing
# the script applies nothing and replies {0, 0, 0, NOTE_LOST, ''}.
# On a Redis Cluster KEYS[KEY_SLOT_MARKER] is the slot group's slot marker
# (ReadModelKeys.slot_marker) and ARG_SLOT_MODE says what to do with it: with
# SLOT_CHECK a missing marker means the slot lost its keys (the script applies
# nothing and replies {0, 0, 0, NOTE_LOST, LOST_SLOT}); SLOT_NEW and
# SLOT_WRITE create a missing marker (a slot the namespace never wrote to);
# SLOT_CHECK and SLOT_NEW also check each session for a hole.

KEY_GENERATION: Final = 1
KEY_SLOT_MARKER: Final = 1
#: The slot's marker must exist (the namespace wrote to the slot before).
SLOT_CHECK: Final = "C"
#: A slot the namespace has not written to: create its marker, check sessions.
SLOT_NEW: Final = "N"
#: Replays and rebuilds: create the marker if missing, check nothing.
SLOT_WRITE: Final = "W"
#: NOTE_LOST's value when a slot marker (not the generation) is missing.
LOST_SLOT: Final = "slot"
#: The namespace lost its generation key: nothing of the call was applied.
NOTE_LOST: Final = "L"
#: Value: the session's list length; its meta and list disagree (a key was lost),
#: so none of its events were applied.
NOTE_HOLE: Final = "H"
#: Value: one entry of the session's index outbox (Redis Cluster only): ``INDEX_ADD``
#: + score + space + user (``ZADD GT``), or ``INDEX_DROP`` + user (``ZREM``).
NOTE_INDEX: Final = "X"
INDEX_ADD: Final = "+"
INDEX_DROP: Final = "-"

# -- the apply script's arguments (redis_projection.lua) ------------------------
# ARGV: the fixed head below; at ARG_POSITIONS the P position pairs (partition,
# next offset); then the number U of user deletions and U (user, event ms)
# pairs; then per session a header (SESSION_*) and n events of EVENT_WIDTH
# fields each (EVENT_*, offsets from the event's first field). The message-id
# and verdict key templates and the slot mode come after ARG_POSITION_COUNT.

ARG_MESSAGES_PREFIX: Final = 1
ARG_MESSAGES_SUFFIX: Final = 2
ARG_META_PREFIX: Final = 3
ARG_META_SUFFIX: Final = 4
#: The user index key's text around the user id. An empty prefix (Redis Cluster)
#: sends index changes to each session's outbox instead, whose key is the meta
#: prefix, the session id and ARG_USER_SUFFIX (``ReadModelKeys.index_outbox``).
ARG_USER_PREFIX: Final = 5
ARG_USER_SUFFIX: Final = 6
ARG_DEFAULT_TTL: Final = 7
ARG_NOW: Final = 8
ARG_POSITIONS_KEY: Final = 9
ARG_POSITION_COUNT: Final = 10
ARG_IDS_PREFIX: Final = 11
ARG_IDS_SUFFIX: Final = 12
ARG_VERDICTS_PREFIX: Final = 13
ARG_VERDICTS_SUFFIX: Final = 14
#: ``""`` off a cluster; on a cluster one of SLOT_CHECK, SLOT_NEW, SLOT_WRITE.
ARG_SLOT_MODE: Final = 15
ARG_POSITIONS: Final = 16

SESSION_ID: Final = 0
SESSION_PARTITION: Final = 1
SESSION_EVENT_COUNT: Final = 2
SESSION_HEADER: Final = 3

EVENT_OFFSET: Final = 0
EVENT_OP: Final = 1
EVENT_ARG: Final = 2
EVENT_MS: Final = 3
EVENT_USER: Final = 4
#: The appended message's id (``""``: none); the conditional append packs its ids in EVENT_ARG.
EVENT_KEY: Final = 5
EVENT_WIDTH: Final = 6

# -- the checkpoint apply script (checkpoint_projection.lua) ---------------------
# KEYS: CheckpointKeys.all(). ARGV: the partition, the user and run index key
# prefixes and suffixes, the thread id, then per event its offset, op, event
# time, user, TTL, the number n of its arguments and the n arguments.

CHECKPOINT_OP_PUT: Final = "P"
CHECKPOINT_OP_WRITES: Final = "W"
CHECKPOINT_OP_DELETE: Final = "D"
CHECKPOINT_OP_DROP: Final = "X"
CHECKPOINT_OP_MULTI: Final = "M"
CHECKPOINT_OP_TOUCH: Final = "T"
CHECKPOINT_OP_CHUNK: Final = "K"
CHECKPOINT_OP_CHUNK_DONE: Final = "Z"
CHECKPOINT_ARG_PARTITION: Final = 1
CHECKPOINT_ARG_USER_PREFIX: Final = 2
CHECKPOINT_ARG_USER_SUFFIX: Final = 3
CHECKPOINT_ARG_RUN_PREFIX: Final = 4
CHECKPOINT_ARG_RUN_SUFFIX: Final = 5
CHECKPOINT_ARG_THREAD: Final = 6
CHECKPOINT_ARG_EVENTS: Final = 7

# -- the one-session swap (session_swap.lua) ------------------------------------

SWAP_KEY_SCRATCH_MESSAGES: Final = 1
SWAP_KEY_SCRATCH_META: Final = 2
SWAP_KEY_LIVE_MESSAGES: Final = 3
SWAP_KEY_LIVE_META: Final = 4
SWAP_KEY_SCRATCH_IDS: Final = 5
SWAP_KEY_LIVE_IDS: Final = 6
SWAP_ARG_LAST_OFFSET: Final = 1

_META_FIELDS: Final = {
    "F_PARTITION": META_PARTITION,
    "F_OFFSET": META_OFFSET,
}

#: The ``local NAME = value`` constants each script file declares at its top.
SCRIPT_CONSTANTS: Final[dict[str, dict[str, int | str]]] = {
    "redis_projection": {
        "ARG_MESSAGES_PREFIX": ARG_MESSAGES_PREFIX,
        "ARG_MESSAGES_SUFFIX": ARG_MESSAGES_SUFFIX,
        "ARG_META_PREFIX": ARG_META_PREFIX,
        "ARG_META_SUFFIX": ARG_META_SUFFIX,
        "ARG_USER_PREFIX": ARG_USER_PREFIX,
        "ARG_USER_SUFFIX": ARG_USER_SUFFIX,
        "ARG_DEFAULT_TTL": ARG_DEFAULT_TTL,
        "ARG_NOW": ARG_NOW,
        "ARG_POSITIONS_KEY": ARG_POSITIONS_KEY,
        "ARG_POSITION_COUNT": ARG_POSITION_COUNT,
        "ARG_IDS_PREFIX": ARG_IDS_PREFIX,
        "ARG_IDS_SUFFIX": ARG_IDS_SUFFIX,
        "ARG_VERDICTS_PREFIX": ARG_VERDICTS_PREFIX,
        "ARG_VERDICTS_SUFFIX": ARG_VERDICTS_SUFFIX,
        "ARG_SLOT_MODE": ARG_SLOT_MODE,
        "ARG_POSITIONS": ARG_POSITIONS,
        "SESSION_ID": SESSION_ID,
        "SESSION_PARTITION": SESSION_PARTITION,
        "SESSION_EVENT_COUNT": SESSION_EVENT_COUNT,
        "SESSION_HEADER": SESSION_HEADER,
        "EVENT_OFFSET": EVENT_OFFSET,
        "EVENT_OP": EVENT_OP,
        "EVENT_ARG": EVENT_ARG,
        "EVENT_MS": EVENT_MS,
        "EVENT_USER": EVENT_USER,
        "EVENT_KEY": EVENT_KEY,
        "EVENT_WIDTH": EVENT_WIDTH,
        "OP_APPEND": OP_APPEND,
        "OP_APPEND_IF": OP_APPEND_IF,
        "OP_CLEAR": OP_CLEAR,
        "OP_DELETE_SESSION": OP_DELETE_SESSION,
        "OP_SET_TTL": OP_SET_TTL,
        "OP_SHREDDED": OP_SHREDDED,
        "NOTE_SKIPPED": NOTE_SKIPPED,
        "NOTE_OWNER": NOTE_OWNER,
        "NOTE_REJECTED": NOTE_REJECTED,
        "NOTE_PARTITION": NOTE_PARTITION,
        "NOTE_ERROR": NOTE_ERROR,
        "NOTE_DUPLICATE": NOTE_DUPLICATE,
        "NOTE_CONFLICT": NOTE_CONFLICT,
        "VERDICT_APPLIED": VERDICT_APPLIED,
        "VERDICT_DUPLICATE": VERDICT_DUPLICATE,
        "VERDICT_CONFLICT": VERDICT_CONFLICT,
        "VERDICT_SHREDDED": VERDICT_SHREDDED,
        "VERDICT_TTL_MS": VERDICT_TTL_MS,
        "EXPIRED_TOMBSTONE_MS": EXPIRED_TOMBSTONE_MS,
        "EXPIRED_GRACE_MS": EXPIRED_GRACE_MS,
        "MAX_TTL_MS": MAX_TTL_MS,
        "KEY_GENERATION": KEY_GENERATION,
        "KEY_SLOT_MARKER": KEY_SLOT_MARKER,
        "SLOT_CHECK": SLOT_CHECK,
        "SLOT_NEW": SLOT_NEW,
        "SLOT_WRITE": SLOT_WRITE,
        "LOST_SLOT": LOST_SLOT,
        "NOTE_LOST": NOTE_LOST,
        "NOTE_HOLE": NOTE_HOLE,
        "NOTE_INDEX": NOTE_INDEX,
        "INDEX_ADD": INDEX_ADD,
        "INDEX_DROP": INDEX_DROP,
        **_META_FIELDS,
        "F_COUNT": META_COUNT,
        "F_OWNER": META_OWNER,
        "F_UPDATED": META_UPDATED,
        "F_DELETED": META_DELETED,
        "F_TTL": META_TTL,
        "F_CREATED": META_CREATED,
        "F_EXPIRY": META_EXPIRY,
        "F_EXPIRED": META_EXPIRED,
    },
    "checkpoint_projection": {
        "ARG_PARTITION": CHECKPOINT_ARG_PARTITION,
        "ARG_USER_PREFIX": CHECKPOINT_ARG_USER_PREFIX,
        "ARG_USER_SUFFIX": CHECKPOINT_ARG_USER_SUFFIX,
        "ARG_RUN_PREFIX": CHECKPOINT_ARG_RUN_PREFIX,
        "ARG_RUN_SUFFIX": CHECKPOINT_ARG_RUN_SUFFIX,
        "ARG_THREAD": CHECKPOINT_ARG_THREAD,
        "ARG_EVENTS": CHECKPOINT_ARG_EVENTS,
        "OP_PUT": CHECKPOINT_OP_PUT,
        "OP_WRITES": CHECKPOINT_OP_WRITES,
        "OP_DELETE": CHECKPOINT_OP_DELETE,
        "OP_DROP": CHECKPOINT_OP_DROP,
        "OP_MULTI": CHECKPOINT_OP_MULTI,
        "OP_TOUCH": CHECKPOINT_OP_TOUCH,
        "OP_CHUNK": CHECKPOINT_OP_CHUNK,
        "OP_CHUNK_DONE": CHECKPOINT_OP_CHUNK_DONE,
        **_META_FIELDS,
        "F_OWNER": META_OWNER,
        "F_TTL": META_TTL,
        "F_EXPIRY": META_EXPIRY,
    },
    "session_swap": {
        "KEY_SCRATCH_MESSAGES": SWAP_KEY_SCRATCH_MESSAGES,
        "KEY_SCRATCH_META": SWAP_KEY_SCRATCH_META,
        "KEY_LIVE_MESSAGES": SWAP_KEY_LIVE_MESSAGES,
        "KEY_LIVE_META": SWAP_KEY_LIVE_META,
        "KEY_SCRATCH_IDS": SWAP_KEY_SCRATCH_IDS,
        "KEY_LIVE_IDS": SWAP_KEY_LIVE_IDS,
        "ARG_LAST_OFFSET": SWAP_ARG_LAST_OFFSET,
        "F_OFFSET": META_OFFSET,
    },
}


def pack_fields(fields: list[bytes]) -> bytes:
    """``fields`` as one script argument: each as ``<byte length>:<bytes>`` (the Lua splits it)."""
    return b"".join(b"%d:%s" % (len(f), f) for f in fields)


def script_source(name: str) -> str:
    """The Lua source of script ``name`` (``redis_projection``, ...), from the package data."""
    return resources.files("chatlog.projector").joinpath(f"{name}.lua").read_text(encoding="utf-8")
