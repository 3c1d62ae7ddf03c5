"""Bounds of idle TTLs, shared by the API, the settings and the projection.

Every TTL the API accepts must be one the projection can apply: the Lua
script turns ``last activity + TTL`` into a ``PEXPIREAT`` argument, which must
be an integer Redis accepts. A TTL of :data:`MAX_TTL_MS` (about 100 years)
keeps that sum far inside both Redis' range and the 2**53 of a Lua number.
"""

from __future__ import annotations

import math

from chatlog.errors import InvalidTtlError

#: The longest idle TTL, in milliseconds: 100 years of 365 days. ``0`` means never.
MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000


def ttl_ms_of(ttl_s: object, what: str = "ttl_s") -> int | None:
    """The idle TTL ``ttl_s`` (seconds, ``0`` never, ``None`` default) in whole milliseconds.

    Raises:
        InvalidTtlError: not a number, NaN, infinite, negative or over 100 years.
    """
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float):
        raise InvalidTtlError(f"{what} must be a number of seconds or None, got {ttl_s!r}")
    if not math.isfinite(ttl_s) or ttl_s < 0:
        raise InvalidTtlError(f"{what} must be finite and not negative (0: never), got {ttl_s!r}")
    # Compared before converting: a huge float times 1000 overflows to infinity.
    if ttl_s > MAX_TTL_MS / 1000:
        raise InvalidTtlError(
            f"{what} {ttl_s!r} is over the limit of {MAX_TTL_MS // 1000} s (100 years); "
            "use 0 for a session that never expires"
        )
    return int(ttl_s * 1000)
