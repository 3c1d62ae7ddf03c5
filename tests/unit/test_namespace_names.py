"""Namespace names are validated, and every read-model key parses back to exactly its namespace."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlog.errors import ConfigurationError
from chatlog.keys import (
    ReadModelKeys,
    active_namespace_key,
    glob_escape,
    namespace_of,
    namespace_problem,
    validate_namespace,
)

segment = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zs", "Zl", "Zp"),
                  blacklist_characters="*?[]\\{}:"),
    min_size=1,
    max_size=12,
)
namespaces = st.lists(segment, min_size=1, max_size=4).map(":".join).filter(
    lambda n: namespace_problem(n) is None
)
ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)


def every_key(keys: ReadModelKeys, some_id: str) -> list[str]:
    return [
        keys.messages(some_id),
        keys.meta(some_id),
        keys.user_sessions(some_id),
        keys.positions(),
        keys.rebuild(),
        *keys.thread(some_id).all(),
    ]


@given(namespace=namespaces, sibling=segment, some_id=ids)
def test_every_key_parses_back_to_its_own_namespace_and_not_a_prefix(
    namespace: str, sibling: str, some_id: str
) -> None:
    """Keys of ``ns`` and of ``ns:<x>`` each parse to their own namespace, never the other."""
    below = f"{namespace}:{sibling}"
    for key in every_key(ReadModelKeys(namespace), some_id):
        assert namespace_of(key) == namespace, key
        assert not ReadModelKeys(below).owns(key)
    for key in every_key(ReadModelKeys(below), some_id):
        assert namespace_of(key) == below, key
        assert not ReadModelKeys(namespace).owns(key)


@pytest.mark.parametrize(
    "key",
    [
        "chatlog:v1",  # a bare prefix
        "chatlog:v1:cache",
        "chatlog:v1:x:{s}:msgs",  # an unknown kind
        "chatlog:v1:s:{s}:other",  # an unknown suffix
        "chatlog:v1:s:{s}",
        "other-app:{chatlog}:positions",  # braces are no namespace
        "chat*log:positions",
        active_namespace_key("positions"),  # the pointer of a topic named like a key
    ],
)
def test_keys_that_are_no_namespace_key_parse_to_none(key: str) -> None:
    """Look-alike keys of other applications belong to no namespace."""
    assert namespace_of(key) is None


@pytest.mark.parametrize(
    "name", ["a*", "a?", "a[b]", "a\\b", "a{b}", "a b", "a\u00a0b", "a\u200bb", "", "x" * 129]
)
def test_bad_names_are_a_configuration_error_naming_the_setting(name: str) -> None:
    """Glob characters, braces, any whitespace, format characters, empty, too long."""
    with pytest.raises(ConfigurationError, match=r"^--namespace: "):
        validate_namespace(name, setting="--namespace")


def test_glob_escape_makes_a_pattern_match_literally() -> None:
    """Every glob metacharacter is escaped with a backslash."""
    assert glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert ReadModelKeys("chatlog:v1").all_pattern() == "chatlog:v1:*"
