"""The Redis target: today's read model (one namespace of one Redis) behind the target protocol.

Applying is :class:`~chatlog.projector.redis_projection.RedisProjection`
(the Lua script) with the namespace's applied positions in the same round
trip; reads use the namespace's keys. It is the default target: the live
projector and ``chatlog replay`` keep their own Redis paths (pointer switch,
hand-off), and this wrapper lets the target commands, the behaviour suite and
the benchmark treat Redis like every other store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from chatlog.errors import ChatLogError, TargetError
from chatlog.keys import META_EXPIRED, META_EXPIRY, ReadModelKeys
from chatlog.projector.changes import Change
from chatlog.projector.positions import AppliedPositions
from chatlog.projector.redis_projection import ApplyResult, RedisProjection
from chatlog.redis_clients import open_redis

_T = TypeVar("_T")


def split_namespace(url: str, default: str) -> tuple[str, str]:
    """``url`` without its ``?namespace=`` option, and that namespace (else ``default``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = next((v for k, v in query if k == "namespace"), default)
    rest = urlencode([(k, v) for k, v in query if k != "namespace"])
    return urlunsplit((*parts[:3], rest, parts.fragment)), namespace


class RedisTarget:
    """One namespace of a Redis deployment as a read-model target.

    Args:
        url: ``redis://`` or ``rediss://`` URL, optionally ``?namespace=NS``.
        namespace: The namespace when the URL names none.
        session_ttl_s: The deployment's idle TTL.
        mode: ``Settings.redis_mode`` (``auto``, ``standalone`` or ``cluster``).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        session_ttl_s: float | None = None,
        mode: str = "auto",
    ) -> None:
        connect_url, self.namespace = split_namespace(url, namespace)
        parts = urlsplit(connect_url)
        host = parts.hostname or "localhost"
        self.url = f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"
        try:
            self.client = open_redis(connect_url, mode=mode)
        except ChatLogError as exc:
            raise TargetError(f"cannot open Redis target {self.url}: {exc}") from exc
        self.keys = ReadModelKeys(self.namespace)
        self.projection = RedisProjection(
            self.client, self.namespace, session_ttl_s=session_ttl_s
        )

    def apply(self, changes: Sequence[Change], *, advance: Mapping[int, int]) -> ApplyResult:
        """Apply ``changes`` with the Lua script; positions in the same round trip."""
        try:
            return self.projection.apply(changes, advance=advance)
        except redis.RedisError as exc:
            raise TargetError(
                f"applying a batch to {self.url} failed: {exc}; applying it again is safe"
            ) from exc

    def replace_session(
        self, session_id: str, changes: Sequence[Change], *, through: int
    ) -> bool:
        """Not here: a Redis session is rebuilt by :meth:`Replayer.rebuild_session`.

        Raises:
            TargetError: always; it names the command that does it.
        """
        raise TargetError(
            f"rebuild one session of {self.url} with `chatlog replay session SESSION "
            "--namespace NS` (a scratch namespace and an atomic swap), not with --target"
        )

    def positions(self) -> dict[int, int]:
        """The namespace's applied positions."""
        return AppliedPositions(self.client, self.namespace).read()

    def read_session(self, session_id: str, *, now_ms: int | None = None) -> list[str]:
        """The session's messages (Redis expires idle sessions itself).

        An idle-expired session's list lingers a little while, hidden from
        readers by its meta's ``expired`` mark: it reads as empty here too.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(self.keys.messages(session_id), 0, -1)
        pipe.hexists(self.keys.meta(session_id), META_EXPIRED)
        stored, expired = self._call(pipe.execute)
        return [] if expired else [m.decode("utf-8") for m in stored]

    def stored_form(self, text: str) -> str:
        """Messages are stored as the log's text, unchanged."""
        return text

    def user_sessions(self, user_id: str, *, now_ms: int | None = None) -> dict[str, int]:
        """The user's listed sessions whose keys have not expired."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        listed: list[Any] = self._call(
            lambda: self.client.zrange(self.keys.user_sessions(user_id), 0, -1, withscores=True)
        )
        pipe = self.client.pipeline(transaction=False)
        for raw, _ in listed:
            pipe.hget(self.keys.meta(raw.decode()), META_EXPIRY)
        expiries: list[Any] = self._call(pipe.execute)
        return {
            raw.decode(): int(score)
            for (raw, score), expiry in zip(listed, expiries, strict=True)
            if expiry is not None and (int(expiry) == 0 or int(expiry) > now)
        }

    def scan_sessions(self) -> Iterator[str]:
        """Every session with a meta hash in the namespace."""
        keys = self._call(
            lambda: list(self.client.scan_iter(match=self.keys.session_pattern(), count=1000))
        )
        return iter(sorted({ReadModelKeys.session_of(k.decode()) for k in keys}))

    def sweep(self, *, now_ms: int | None = None) -> int:
        """Nothing to do: Redis expires an idle session's keys by itself."""
        return 0

    def drop(self) -> None:
        """Delete every key of the namespace."""
        keys = self._call(
            lambda: list(self.client.scan_iter(match=self.keys.all_pattern(), count=1000))
        )
        for start in range(0, len(keys), 1000):
            self._call(partial(self.client.unlink, *keys[start : start + 1000]))

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def _call(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except redis.RedisError as exc:
            raise TargetError(f"Redis target {self.url} failed: {exc}") from exc
