"""Dead letters fit the producer's request limit whatever the poison record holds."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.producers.records import RECORD_OVERHEAD
from chatlog.projector.dead_letter import (
    HEADER_LETTER,
    KEY_LIMIT,
    REASON_LIMIT,
    DeadLetter,
    bounded_letter,
    key_text,
    short_reason,
)
from tests.fixtures.raw_record import RawRecord

LIMIT = 64 * 1024


def _size(letter: tuple[bytes | None, bytes, list[tuple[str, bytes]]]) -> int:
    key, value, headers = letter
    return len(key or b"") + len(value) + sum(len(k.encode()) + len(v) for k, v in headers)


@settings(max_examples=60, deadline=None)
@given(
    key_size=st.sampled_from([0, 10, KEY_LIMIT, KEY_LIMIT + 1, 2 * 1024 * 1024]),
    value_size=st.sampled_from([0, 100, LIMIT, LIMIT + 1, 3 * LIMIT]),
    header_count=st.sampled_from([0, 1, 40, 3000]),
    header_size=st.sampled_from([0, 10, 100 * 1024]),
    name_size=st.sampled_from([1, 300, 5000]),
    reason_size=st.sampled_from([10, 100_000]),
)
def test_every_letter_fits_the_producer_limit(
    key_size: int, value_size: int, header_count: int, header_size: int, name_size: int,
    reason_size: int,
) -> None:
    """Key, headers, value and reason of any size give a letter under the request limit."""
    value = b"v" * (header_size if header_count <= 40 else 10)  # a many-header flood stays small
    headers: list[tuple[str, bytes | None]] = [
        (f"{n}" + "h" * name_size, value) for n in range(header_count)
    ]
    raw = RawRecord("t", 3, 7, b"k" * key_size, b"x" * value_size, headers)
    letter = bounded_letter(DeadLetter(raw, "r" * reason_size), LIMIT)
    assert _size(letter) <= LIMIT + RECORD_OVERHEAD // 2
    if value_size > LIMIT:
        assert (HEADER_LETTER, b"stub") in letter.headers
        stub = json.loads(letter.value)
        assert stub["value_sha256"] == hashlib.sha256(raw.value or b"").hexdigest()
        assert (stub["partition"], stub["offset"], stub["key_bytes"]) == (3, 7, key_size)
    else:
        assert letter.value == raw.value


def test_a_tombstone_is_dead_lettered_with_an_empty_value() -> None:
    """A record whose value is None becomes a letter with an empty value."""
    letter = bounded_letter(DeadLetter(RawRecord("t", 0, 1, b"s", None, []), "undecodable"), LIMIT)
    assert letter.value == b""


def test_long_reasons_and_keys_keep_their_start_and_end() -> None:
    """The end of a reason says what was wrong, so a cut keeps it; keys are cut for logs."""
    reason = "key '" + "k" * 100_000 + "' is not the session id 's1'"
    short = short_reason(reason)
    assert len(short.encode()) <= REASON_LIMIT
    assert short.startswith("key 'kkk") and short.endswith("is not the session id 's1'")
    assert short_reason("fine") == "fine"
    assert key_text(b"s1") == "s1" and key_text(None) == ""
    assert key_text(b"k" * 5000).endswith("...[5000 bytes]")
    assert len(key_text(b"k" * 5000)) < KEY_LIMIT + 32
