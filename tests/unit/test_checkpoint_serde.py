"""Checkpoint values decode with a strict allowlist: a stored value never chooses code to run."""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import (
    EXT_CONSTRUCTOR_KW_ARGS,
    EXT_CONSTRUCTOR_POS_ARGS,
    EXT_CONSTRUCTOR_SINGLE_ARG,
    EXT_METHOD_SINGLE_ARG,
    EXT_PYDANTIC_V2,
    JsonPlusSerializer,
)
from langgraph.types import Command, Interrupt, Send

from chatlog.errors import CheckpointDecodeError, UnsafeCheckpointValueError, UnsafeInputError
from chatlog.histories.checkpoint_serde import CheckpointSerializer, checked_serde


@dataclasses.dataclass
class Custom:
    """A state type of the application's own, not on LangGraph's safe list."""

    name: str


def _ext(code: int, record: list[Any]) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, ormsgpack.packb(record))


def _canary(tmp_path: Path) -> tuple[Path, str]:
    marker = tmp_path / "ran"
    return marker, f"touch {marker}"


@pytest.mark.parametrize(
    "code",
    [
        EXT_CONSTRUCTOR_SINGLE_ARG,
        EXT_CONSTRUCTOR_POS_ARGS,
        EXT_CONSTRUCTOR_KW_ARGS,
        EXT_PYDANTIC_V2,
    ],
)
def test_a_value_naming_os_system_raises_and_runs_nothing(tmp_path: Path, code: int) -> None:
    """The finding's proof: a value naming os.system is refused and the command never runs."""
    marker, command = _canary(tmp_path)
    args: Any = {"command": command} if code in (EXT_CONSTRUCTOR_KW_ARGS, EXT_PYDANTIC_V2) else (
        [command] if code == EXT_CONSTRUCTOR_POS_ARGS else command
    )
    crafted = ormsgpack.packb({"v": _ext(code, ["os", "system", args])})
    with pytest.raises(UnsafeCheckpointValueError, match=r"os\.system"):
        CheckpointSerializer().loads_typed(("msgpack", crafted))
    assert not marker.exists()


def test_langgraphs_default_serializer_would_have_run_it(tmp_path: Path) -> None:
    """The hole is real: LangGraph's permissive default runs the stored call."""
    marker, command = _canary(tmp_path)
    crafted = ormsgpack.packb(_ext(EXT_CONSTRUCTOR_POS_ARGS, ["os", "system", [command]]))
    JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=True).loads_typed(
        ("msgpack", crafted)
    )
    assert marker.exists()


def test_a_forbidden_type_nested_inside_allowed_ones_is_refused(tmp_path: Path) -> None:
    """Nesting (a Send carrying a message carrying a list) does not hide a forbidden record."""
    marker, command = _canary(tmp_path)
    evil = _ext(EXT_CONSTRUCTOR_POS_ARGS, ["subprocess", "getoutput", [command]])
    send = _ext(EXT_CONSTRUCTOR_POS_ARGS, ["langgraph.types", "Send", ["node", [1, {"x": evil}]]])
    crafted = ormsgpack.packb([{"messages": [send]}])
    with pytest.raises(UnsafeCheckpointValueError, match=r"subprocess\.getoutput"):
        CheckpointSerializer().loads_typed(("msgpack", crafted))
    assert not marker.exists()


def test_a_method_call_outside_the_safe_set_is_refused() -> None:
    """Only LangGraph's own safe methods (datetime.fromisoformat) may be called."""
    crafted = ormsgpack.packb(_ext(EXT_METHOD_SINGLE_ARG, ["os", "path", "/", "listdir"]))
    with pytest.raises(UnsafeCheckpointValueError, match="not an allowed method"):
        CheckpointSerializer().loads_typed(("msgpack", crafted))


def test_unknown_extension_codes_and_malformed_records_are_typed_errors() -> None:
    """Garbage is a ChatLogError, never an IndexError from deep inside the decoder."""
    with pytest.raises(UnsafeCheckpointValueError, match="extension code 42"):
        CheckpointSerializer().loads_typed(("msgpack", ormsgpack.packb(ormsgpack.Ext(42, b""))))
    with pytest.raises(UnsafeCheckpointValueError, match="malformed"):
        CheckpointSerializer().loads_typed(
            ("msgpack", ormsgpack.packb(_ext(EXT_CONSTRUCTOR_SINGLE_ARG, ["os"])))
        )
    with pytest.raises(CheckpointDecodeError):
        CheckpointSerializer().loads_typed(("msgpack", b"\xc1"))


@pytest.mark.parametrize("kind", ["pickle", "evil", ""])
def test_serializer_types_other_than_data_are_refused(kind: str) -> None:
    """A pickle (or any unknown) type tag is never loaded."""
    with pytest.raises(UnsafeCheckpointValueError, match="serializer type"):
        CheckpointSerializer().loads_typed((kind, b"\x80\x05N."))


def test_a_legacy_json_constructor_naming_a_forbidden_type_is_refused() -> None:
    """LangGraph's old JSON format is checked by the same allowlist."""
    crafted = json.dumps(
        {"lc": 2, "type": "constructor", "id": ["os", "system"], "args": ["true"]}
    ).encode()
    with pytest.raises(UnsafeCheckpointValueError, match=r"os\.system"):
        CheckpointSerializer().loads_typed(("json", crafted))


def test_what_graphs_store_round_trips() -> None:
    """Messages, Send, Command, Interrupt, datetimes, UUIDs, sets decode to equal values."""
    serde = CheckpointSerializer()
    value = {
        "messages": [
            HumanMessage("hi", id="1"),
            AIMessage("", tool_calls=[{"name": "t", "args": {"a": 1}, "id": "c1"}], id="2"),
            ToolMessage("ok", tool_call_id="c1", id="3"),
        ],
        "send": Send("node", {"x": 1}),
        "command": Command(goto="node", update={"k": "v"}),
        "interrupt": Interrupt(value="approve?", id="i1"),
        "when": datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc),
        "id": uuid.UUID(int=7),
        "tags": {"a", "b"},
        "blob": b"\x00\x01",
    }
    assert serde.loads_typed(serde.dumps_typed(value)) == value
    assert serde.loads_typed(serde.dumps_typed(None)) is None


def test_a_type_of_the_application_is_refused_until_allowlisted() -> None:
    """with_msgpack_allowlist (what a compiled graph's with_allowlist calls) is honoured."""
    serde = CheckpointSerializer()
    stored = serde.dumps_typed(Custom("x"))
    with pytest.raises(UnsafeCheckpointValueError, match="with_allowlist"):
        serde.loads_typed(stored)
    widened = serde.with_msgpack_allowlist([(Custom.__module__, "Custom")])
    assert isinstance(widened, CheckpointSerializer)
    assert widened.loads_typed(stored) == Custom("x")
    with pytest.raises(UnsafeCheckpointValueError):
        serde.loads_typed(stored)  # the original stays strict
    assert CheckpointSerializer(allowed_msgpack_modules=[Custom]).loads_typed(stored) == Custom("x")


def test_permissive_serializers_are_refused_unless_opted_in_by_name() -> None:
    """LangGraph's default (any type) is refused like pickle, unless allow_unsafe_serde=True."""
    permissive = JsonPlusSerializer()
    with pytest.raises(UnsafeInputError, match="allow_unsafe_serde"):
        checked_serde(permissive, allow_unsafe_serde=False)
    assert checked_serde(permissive, allow_unsafe_serde=True) is permissive
    with pytest.raises(UnsafeInputError, match="allow_unsafe_serde"):
        checked_serde(JsonPlusSerializer(allowed_json_modules=True), allow_unsafe_serde=False)
    with pytest.raises(UnsafeInputError, match="allow_unsafe_serde"):
        checked_serde(EncryptedSerializer(_NoCipher(), permissive), allow_unsafe_serde=False)
    for opted_in in (False, True):
        with pytest.raises(UnsafeInputError, match="pickle"):
            checked_serde(JsonPlusSerializer(pickle_fallback=True), allow_unsafe_serde=opted_in)
    strict = JsonPlusSerializer(allowed_msgpack_modules=None)
    assert checked_serde(strict, allow_unsafe_serde=False) is strict
    assert isinstance(checked_serde(None, allow_unsafe_serde=False), CheckpointSerializer)


class _NoCipher:
    """Stands in for a cipher: the check looks only at the wrapped serializer."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "none", plaintext

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        return ciphertext
