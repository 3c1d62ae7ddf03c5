"""The Lua scripts declare exactly the constants chatlog.projector.protocol defines."""

from __future__ import annotations

import re

import pytest

from chatlog.projector import protocol
from chatlog.projector.protocol import SCRIPT_CONSTANTS, script_source

# A top-level `local NAME = 12` or `local NAME = 'text'` (names in capitals).
_CONSTANT = re.compile(r"^local ([A-Z][A-Z0-9_]*) = (\d+|'[^']*')$", re.MULTILINE)


def declared(name: str) -> dict[str, int | str]:
    """The named constants at the top of script ``name``."""
    found: dict[str, int | str] = {}
    for constant, value in _CONSTANT.findall(script_source(name)):
        assert constant not in found, f"{name}.lua declares {constant} twice"
        found[constant] = value[1:-1] if value.startswith("'") else int(value)
    return found


@pytest.mark.parametrize("name", sorted(SCRIPT_CONSTANTS))
def test_script_declares_the_protocol_constants(name: str) -> None:
    """Every offset, code and field name in the .lua equals the Python constant."""
    assert declared(name) == SCRIPT_CONSTANTS[name]


@pytest.mark.parametrize("name", ["redis_projection", "session_swap"])
def test_script_indexes_its_arguments_only_by_name(name: str) -> None:
    """No ARGV[3] or KEYS[2]-style literal index is left in the script's body."""
    assert re.findall(r"(?:ARGV|KEYS)\[\d+\]", script_source(name)) == []


def test_checkpoint_script_reads_keys_in_checkpoint_keys_order() -> None:
    """The checkpoint script's KEYS are CheckpointKeys.all(), ten of them, meta first."""
    body = script_source("checkpoint_projection")
    assert "KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]" in body
    assert "local runs, chunks = KEYS[9], KEYS[10]" in body


def test_event_types_cover_every_operation_code() -> None:
    """Each op code has one event type, and the codes are distinct."""
    codes = [getattr(protocol, n) for n in dir(protocol) if n.startswith("OP_")]
    assert sorted(codes) == sorted(protocol.EVENT_TYPES)
