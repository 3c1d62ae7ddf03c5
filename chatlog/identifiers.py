"""Validation of session and user ids, shared by every entry point."""

from __future__ import annotations

import unicodedata

from chatlog.errors import InvalidSessionIdError, InvalidUserIdError

MAX_ID_BYTES = 256


def _problem(value: object, what: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a str, got {type(value).__name__}"
    if not value:
        return f"{what} must not be empty"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        return f"{what} is {size} bytes of UTF-8; the limit is {MAX_ID_BYTES}"
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"{what} {value!r} contains the control character {char!r}; remove it"
    return None


def validate_session_id(value: object) -> str:
    """Return ``value`` if it is a usable session id.

    A session id is a non-empty ``str`` of at most 256 bytes of UTF-8 with no
    control characters (it becomes the Kafka key and part of Redis keys).

    Raises:
        InvalidSessionIdError: it is not.
    """
    problem = _problem(value, "session id")
    if problem:
        raise InvalidSessionIdError(problem)
    assert isinstance(value, str)
    return value


def validate_user_id(value: object) -> str | None:
    """Return ``value`` if it is ``None`` or a usable user id (same rules as session ids).

    Raises:
        InvalidUserIdError: it is not.
    """
    if value is None:
        return None
    problem = _problem(value, "user id")
    if problem:
        raise InvalidUserIdError(problem)
    assert isinstance(value, str)
    return value
