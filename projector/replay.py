"""Replay: rebuild read models from the log, the source of truth.

:class:`Replayer` is the one entry point (``chatlog replay`` is a thin layer
over it); each concern lives in its own module:

* :mod:`chatlog.projector.rebuild` — a whole namespace, resumable, with a switch;
* :mod:`chatlog.projector.session_rebuild` — one session, swapped in atomically;
* :mod:`chatlog.projector.verifier` — a namespace checked against the log;
* :mod:`chatlog.projector.namespace_admin` — the active namespace, dropping one;
* :mod:`chatlog.projector.replay_log` / :mod:`~chatlog.projector.replay_target` —
  reading the topic and writing Redis, shared by all of them.

Replays read partitions with manual assignment (no consumer group, so they
never disturb the live projector) and apply records with the same
:meth:`RedisProjection.apply` the live projector uses.
"""

from __future__ import annotations

from datetime import datetime

import redis

from chatlog.keys import validate_namespace
from chatlog.projector.namespace_admin import NamespaceAdmin, NamespaceListing
from chatlog.projector.rebuild import CATCH_UP_ROUNDS, HANDOFF_S, NamespaceRebuild
from chatlog.projector.replay_log import ReplayLog
from chatlog.projector.replay_progress import ProgressCallback, ReplayProgress
from chatlog.projector.replay_target import ReplayTarget
from chatlog.projector.session_rebuild import SessionReplay, partition_for, rebuild_session
from chatlog.projector.verifier import SETTLE_S, Verifier, VerifyReport
from chatlog.settings import Settings

__all__ = [
    "CATCH_UP_ROUNDS",
    "HANDOFF_S",
    "SETTLE_S",
    "NamespaceListing",
    "ProgressCallback",
    "ReplayProgress",
    "Replayer",
    "SessionReplay",
    "VerifyReport",
    "partition_for",
]


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
        self.log = ReplayLog(settings)
        self.target = ReplayTarget(settings, redis_client)
        self.admin = NamespaceAdmin(self.target)
        self.redis = self.target.redis
        self.codec = self.log.codec
        self.reader = self.log.reader
        #: The data keys sealed messages open under; ``None`` when encryption is off.
        self.key_store = self.log.key_store
        self.active = self.admin.active

    # -- namespaces --------------------------------------------------------

    def active_namespace(self) -> str:
        """The namespace readers use now."""
        return self.admin.active_namespace()

    def drop(self, namespace: str, *, allow_active: bool = False) -> int:
        """Delete every key of ``namespace``; return how many were deleted.

        Only keys that parse back to exactly ``namespace`` go: never a key of
        a namespace it is a prefix of (``chatlog`` vs ``chatlog:v2``), nor of
        another application sharing the database.

        Raises:
            ConfigurationError: ``namespace`` is no valid namespace name.
            NamespaceInUseError: ``namespace`` is the active one (unless ``allow_active``).
        """
        return self.admin.drop(namespace, allow_active=allow_active)

    def has_keys(self, namespace: str) -> bool:
        """Whether ``namespace`` holds any key."""
        return self.admin.has_keys(validate_namespace(namespace))

    def namespaces(self) -> NamespaceListing:
        """The namespaces of the topic in this Redis: key counts, the active one, rebuilds.

        Raises:
            ReadModelError: Redis cannot be read.
        """
        return self.admin.namespaces()

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
            ConfigurationError: ``namespace`` is no valid namespace name.
            ReplayError: the options conflict, or an unfinished rebuild of
                ``namespace`` was started with another ``as_of``.
            TopicError: the topic is missing or cannot be read.
            ReadModelError: Redis failed; run the same rebuild again to resume.
        """
        rebuild = NamespaceRebuild(self.log, self.admin, gc_threshold=self.gc_threshold)
        return rebuild.run(
            validate_namespace(self.settings.namespace if namespace is None else namespace),
            as_of=as_of,
            switch=switch,
            on_progress=on_progress,
            handoff_s=handoff_s,
        )

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
            ConfigurationError: ``namespace`` is no valid namespace name.
            InvalidSessionIdError: the session id is unusable.
            TopicError: the topic is missing or cannot be read.
            ReplayError: the session kept changing faster than it could be rebuilt.
        """
        return rebuild_session(
            self.log,
            self.admin,
            session_id,
            validate_namespace(self.active_namespace() if namespace is None else namespace),
            on_progress=on_progress,
        )

    # -- verify ------------------------------------------------------------------

    def verify(
        self,
        namespace: str | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        settle_s: float = SETTLE_S,
        repair: bool = False,
    ) -> VerifyReport:
        """Recompute every session from the log and report each one the read model gets wrong.

        The log is folded up to the namespace's applied positions (or the end
        of the log when it has none). Sessions that differ are checked again
        for up to ``settle_s`` while the log is folded further, so a live
        projector moving the read model on is not mistaken for a difference.

        With ``repair``, exactly the sessions that differ are rebuilt with
        :meth:`rebuild_session` (nothing else is touched) and checked again:
        the report's ``repaired`` lists what was rebuilt, ``remaining`` what
        still differs, and ``healthy`` says whether the namespace matches now.

        Raises:
            ConfigurationError: ``namespace`` is no valid namespace name.
            ReplayError: a session kept changing faster than it could be repaired.
        """
        namespace = validate_namespace(
            self.active_namespace() if namespace is None else namespace
        )

        def repair_session(session_id: str) -> SessionReplay:
            return self.rebuild_session(session_id, namespace)

        return Verifier(self.log, self.target).run(
            namespace,
            on_progress=on_progress,
            settle_s=settle_s,
            repair=repair_session if repair else None,
        )
