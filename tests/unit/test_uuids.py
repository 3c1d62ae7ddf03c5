"""Bulk uuid4 strings: canonical RFC 4122 version 4 UUIDs, each one fresh."""

from __future__ import annotations

import uuid

from chatlog.uuids import uuid4_strings


def test_every_string_is_a_canonical_version_4_uuid() -> None:
    """Each parses as a version 4, RFC 4122 UUID whose canonical text is the string itself."""
    strings = uuid4_strings(5000)
    assert len(strings) == 5000
    for text in strings:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_the_strings_are_distinct_and_use_every_variant_nibble() -> None:
    """No repeats, and the random variant bits take all four of their values."""
    strings = uuid4_strings(5000)
    assert len(set(strings)) == len(strings)
    assert {text[19] for text in strings} == set("89ab")


def test_none_asked_gives_none() -> None:
    """An empty batch is an empty list."""
    assert uuid4_strings(0) == []
