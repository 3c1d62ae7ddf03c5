"""The projector's raised young-generation GC threshold is scoped and restored."""

from __future__ import annotations

import gc

import pytest

from chatlog.projector.gc_threshold import young_gc_threshold


def test_the_threshold_holds_inside_the_block_and_is_restored_after() -> None:
    before = gc.get_threshold()
    with young_gc_threshold(12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
    assert gc.get_threshold() == before


def test_it_is_restored_when_the_block_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), young_gc_threshold(54_321):
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_none_changes_nothing() -> None:
    before = gc.get_threshold()
    with young_gc_threshold(None):
        assert gc.get_threshold() == before
