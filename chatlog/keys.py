"""The Redis key layout of the read model, built in this one place.

It lives in the base layer (not in ``projector/``) because both the writer
(the projector) and the readers (``histories/``) need it, and ``histories``
must not import the projector.

Every key of one session carries the session id as a Redis Cluster hash tag
(``{...}``), so a session's keys share one slot and one Lua script can
update them atomically.

Namespaces are exact (:func:`validate_namespace`): a namespace holds no
brace and no glob character, so the first ``{`` of a key opens its hash tag
and :func:`namespace_of` parses any key back to the one namespace it belongs
to. ``chatlog`` and ``chatlog:v2`` never share a key, and a SCAN pattern is
only a filter: callers keep the keys a namespace :meth:`~ReadModelKeys.owns`.
A new key kind must be added to :data:`TAGGED_SUFFIXES` or
:data:`NAMESPACE_KEYS`, or ``replay drop`` will leave it behind.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import string
import unicodedata
from dataclasses import dataclass

from chatlog.errors import ConfigurationError

#: The longest namespace name accepted (characters).
MAX_NAMESPACE_LENGTH = 128
#: Characters a namespace may not hold: Redis glob syntax (a namespace is part of
#: SCAN patterns) and braces (the first ``{`` of a key opens its hash tag, which
#: is how a key is parsed back into its namespace).
NAMESPACE_FORBIDDEN = frozenset("*?[]\\{}")
#: Prefix of the active-namespace pointers; no namespace may live under it.
POINTER_PREFIX = "chatlog:active-namespace"

#: Key kinds with a hash tag, ``<ns>:<kind>:{<id>}:<suffix>``, and their suffixes.
TAGGED_SUFFIXES: dict[str, tuple[str, ...]] = {
    "s": ("msgs", "meta", "ids", "verdicts", "ix"),
    "u": ("sessions", "threads"),
    "t": ("meta", "cps", "nss", "cp", "cpv", "blobs", "w", "wi", "runs", "chunks"),
    "r": ("checkpoints",),
    # Redis Cluster loss detection: a slot's marker, the namespace's known slots.
    "c": ("mark", "slots"),
}
#: Hash slots of a Redis Cluster (CRC16 of the key's hash tag, modulo this).
CLUSTER_SLOTS = 16384
#: Keys of a namespace without a hash tag, ``<ns>:<name>``.
NAMESPACE_KEYS = ("positions", "rebuild", "generation", "repairing", "repair-requests")


def namespace_problem(
    value: object, *, max_length: int | None = MAX_NAMESPACE_LENGTH
) -> str | None:
    """Why ``value`` is not a usable namespace name, or ``None`` when it is."""
    if not isinstance(value, str):
        return f"a namespace must be a str, got {type(value).__name__}"
    if not value:
        return "a namespace must not be empty"
    if max_length is not None and len(value) > max_length:
        return f"namespace {value[:40]!r}... is {len(value)} characters; the limit is {max_length}"
    for char in value:
        if char in NAMESPACE_FORBIDDEN:
            return (
                f"namespace {value!r} contains {char!r}; glob characters (* ? [ ] \\) and "
                "braces are not allowed, use letters, digits, ':', '-', '_' or '.'"
            )
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Zs"):
            return f"namespace {value!r} contains the whitespace or control character {char!r}"
    if value == POINTER_PREFIX or value.startswith(POINTER_PREFIX + ":"):
        return f"namespace {value!r} is reserved for the active-namespace pointers"
    return None


def validate_namespace(value: object, *, setting: str = "namespace") -> str:
    r"""Return ``value`` if it is a usable namespace name.

    A namespace is a non-empty ``str`` of at most :data:`MAX_NAMESPACE_LENGTH`
    characters with no glob characters (``* ? [ ] \``), no braces, no
    whitespace or control characters, and not under ``chatlog:active-namespace``.
    It may contain ``:`` (``chatlog:v2``): keys are parsed back at their first
    ``{``, so ``chatlog`` and ``chatlog:v2`` never share a key.

    Raises:
        ConfigurationError: it is not; the message names ``setting``.
    """
    problem = namespace_problem(value)
    if problem:
        raise ConfigurationError(f"{setting}: {problem}")
    assert isinstance(value, str)
    return value


def key_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 of its hash tag, as Redis computes it)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % CLUSTER_SLOTS


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """The shortest hash tag (letters and digits) of every slot, found once (~0.25 s)."""
    alphabet = (string.digits + string.ascii_letters).encode()
    tags: list[bytes | None] = [None] * CLUSTER_SLOTS
    left = CLUSTER_SLOTS
    for length in itertools.count(1):
        for combo in itertools.product(alphabet, repeat=length):
            tag = bytes(combo)
            slot = binascii.crc_hqx(tag, 0) % CLUSTER_SLOTS
            if tags[slot] is None:
                tags[slot] = tag
                left -= 1
                if not left:
                    return tuple(t.decode() for t in tags if t is not None)
    raise AssertionError("unreachable")  # pragma: no cover


def slot_tag(slot: int) -> str:
    """A hash tag whose keys land in ``slot`` (at most 3 characters)."""
    return _slot_tags()[slot]


def glob_escape(text: str) -> str:
    """``text`` with Redis glob syntax escaped, so a SCAN pattern matches it literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def namespace_of(key: str) -> str | None:
    """The namespace a read-model key belongs to, or ``None`` when it is no read-model key.

    The inverse of :class:`ReadModelKeys`: a tagged key is
    ``<ns>:<kind>:{<id>}:<suffix>`` (the first ``{`` opens the tag, since a
    namespace holds no brace), an untagged one ``<ns>:<name>``.
    """
    brace = key.find("{")
    if brace < 0:
        namespace, sep, name = key.rpartition(":")
        if not sep or name not in NAMESPACE_KEYS:
            return None
    else:
        head, close = key[:brace], key.rfind("}")
        if len(head) < 4 or head[-1] != ":" or head[-3] != ":" or close < brace:
            return None
        suffixes = TAGGED_SUFFIXES.get(head[-2], ())
        if not key[close + 1 :].startswith(":") or key[close + 2 :] not in suffixes:
            return None
        namespace = head[:-3]
    return namespace if namespace_problem(namespace, max_length=None) is None else None


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

    def message_ids(self, session_id: str) -> str:
        """Set of the message ids a session holds (idempotent appends; same slot)."""
        return f"{self.namespace}:s:{{{session_id}}}:ids"

    def verdicts(self, session_id: str) -> str:
        """Hash of offset -> verdict of a session's conditional appends (expires; same slot)."""
        return f"{self.namespace}:s:{{{session_id}}}:verdicts"

    def index_outbox(self, session_id: str) -> str:
        """List of a session's pending user-index changes (Redis Cluster only).

        The user index lives in the user's slot, which a session's apply
        script cannot reach on a cluster: the script queues the changes here,
        in the session's slot, and the projector moves them on.
        """
        return f"{self.namespace}:s:{{{session_id}}}:ix"

    def user_sessions(self, user_id: str) -> str:
        """Sorted set of a user's sessions scored by last activity (epoch milliseconds)."""
        return f"{self.namespace}:u:{{{user_id}}}:sessions"

    def session_prefix(self) -> str:
        """What every key of one of the namespace's sessions starts with (up to the tag's ``{``)."""
        return f"{self.namespace}:s:{{"

    def session_pattern(self) -> str:
        """SCAN pattern matching every session meta key of the namespace.

        Its matches can still include another application's keys that merely
        look alike; keep those :meth:`owns`.
        """
        return f"{glob_escape(self.namespace)}:s:{{*}}:meta"

    def all_pattern(self) -> str:
        """SCAN pattern matching every key of the namespace, and keys of namespaces below it.

        ``chatlog:*`` also matches ``chatlog:v2``'s keys and other applications'
        ``chatlog:...`` keys: keep only those this namespace :meth:`owns`.
        """
        return f"{glob_escape(self.namespace)}:*"

    def owns(self, key: str | bytes) -> bool:
        """Whether ``key`` is one of this namespace's keys (and no other namespace's)."""
        text = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        return namespace_of(text) == self.namespace

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

    def slot_marker(self, slot: int) -> str:
        """String in hash slot ``slot`` (Redis Cluster) kept while the namespace has keys there.

        The projector writes it with the slot's first session and checks it
        in every apply call to the slot: a primary that lost its data (a
        restart without persistence, a flush) lost its slots' markers too.
        """
        return f"{self.namespace}:c:{{{slot_tag(slot)}}}:mark"

    def known_slots(self) -> str:
        """Bitmap of the hash slots the namespace wrote to (Redis Cluster).

        It shares the :meth:`generation` key's slot, so it is lost exactly when
        the generation is: a slot marker missing on a slot the bitmap knows
        means the slot lost its keys; on another slot, that it is new.
        """
        return f"{self.namespace}:c:{{{slot_tag(key_slot(self.generation()))}}}:slots"

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
            runs=f"{prefix}:runs",
            chunks=f"{prefix}:chunks",
        )

    def user_threads(self, user_id: str) -> str:
        """Sorted set of a user's LangGraph threads by the time of their last event."""
        return f"{self.namespace}:u:{{{user_id}}}:threads"

    def run_checkpoints(self, run_id: str) -> str:
        """Sorted set (scores 0) of ``<thread> NUL <index member>`` a LangGraph run wrote."""
        return f"{self.namespace}:r:{{{run_id}}}:checkpoints"

    def thread_pattern(self) -> str:
        """SCAN pattern matching every checkpoint thread's meta key of the namespace."""
        return f"{glob_escape(self.namespace)}:t:{{*}}:meta"


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
        runs: Hash of the run id of each checkpoint that has one, by index member.
        chunks: Hash of the parts of chunked events not yet complete, by group and index.
    """

    meta: str
    index: str
    namespaces: str
    checkpoints: str
    versions: str
    blobs: str
    writes: str
    write_index: str
    runs: str
    chunks: str

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
            self.runs,
            self.chunks,
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
#: Verdicts of conditional appends (the values of ``ReadModelKeys.verdicts``): applied,
#: a duplicate of an applied call, or refused (followed by the message count found).
VERDICT_APPLIED = "A"
VERDICT_DUPLICATE = "D"
VERDICT_CONFLICT = "V"
#: The call's subject was erased (its data key destroyed) before the projector
#: applied it: nothing of it was appended, and the writer's call returns.
VERDICT_SHREDDED = "S"
#: Set (to the expiry, epoch ms) while the meta hash is an idle-expired session's tombstone.
META_EXPIRED = "expired"
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
    return f"{POINTER_PREFIX}:{topic}"
