"""Session ids that no other user can take: unguessable ids and per-user scoping.

Session ids are chosen by the application, and the first user to write a
session owns it. Two defences keep one user from taking another's session:

* :func:`new_session_id` hands out ids nobody can guess (``secrets``), so a
  session cannot be claimed or squatted before its owner writes it.
  ``ChatLog.new_session(user_id)`` uses it.
* Scoping (``Settings.scope_sessions_by_user``, ``CHATLOG_SCOPE_SESSIONS_BY_USER``;
  off by default): the id on the log and in the read model is derived from
  the user and the application's session id (:func:`scoped_session_id`), so
  ``bob``'s ``chat-1`` and ``alice``'s ``chat-1`` are two sessions and no
  id bob chooses can ever be one of alice's. The stored id is
  ``u<n>:<user>:<session>``, where ``n`` is the user id's length in
  characters: the user part is read exactly, whatever characters follow.
  It is off by default because the stored ids are then no longer the
  application's ids (LangChain-compatible layouts, ``RedisChatMessageHistory``
  keys, other readers of the log see the scoped form).
"""

from __future__ import annotations

import secrets

from chatlog.errors import InvalidSessionIdError, InvalidUserIdError
from chatlog.identifiers import MAX_ID_BYTES, validate_session_id, validate_user_id

#: Random bytes in an id from :func:`new_session_id` (128 bits; 22 characters).
SESSION_TOKEN_BYTES = 16


def new_session_id(prefix: str = "") -> str:
    """A fresh session id that cannot be guessed: ``prefix`` + 128 random bits, URL-safe.

    ``prefix`` is for people reading ids (``"support-"``); it adds no secrecy.

    Raises:
        InvalidSessionIdError: the prefix makes the id unusable.
    """
    return validate_session_id(prefix + secrets.token_urlsafe(SESSION_TOKEN_BYTES))


def _scope(user_id: str) -> str:
    return f"u{len(user_id)}:{user_id}:"


def scoped_session_id(user_id: str | None, session_id: str) -> str:
    """The stored id of ``user_id``'s session ``session_id`` when sessions are scoped.

    Raises:
        InvalidUserIdError: ``user_id`` is ``None`` or unusable (a scoped session
            always has an owner: one without would be anybody's).
        InvalidSessionIdError: ``session_id`` is unusable, or the two together are
            longer than a session id may be.
    """
    if user_id is None:
        raise InvalidUserIdError(
            "sessions are scoped by user (CHATLOG_SCOPE_SESSIONS_BY_USER): every history "
            "needs a user id; pass user_id=..."
        )
    validate_user_id(user_id)
    validate_session_id(session_id)
    scoped = _scope(user_id) + session_id
    if len(scoped.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidSessionIdError(
            f"session id {session_id!r} of user {user_id!r} is too long once scoped by "
            f"user: together they must fit in about {MAX_ID_BYTES} bytes; use a shorter id"
        )
    return scoped


def unscoped_session_id(user_id: str, stored: str) -> str | None:
    """The application's session id in ``stored``, if ``stored`` is ``user_id``'s; else ``None``."""
    scope = _scope(user_id)
    return stored[len(scope) :] if stored.startswith(scope) and len(stored) > len(scope) else None
