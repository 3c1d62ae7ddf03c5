"""Checkpoint values decoded with a strict allowlist: no stored byte chooses code to run.

LangGraph's ``JsonPlusSerializer`` stores non-JSON values as msgpack
extension records that *name* a module and a callable; its decoder imports
the module and calls the callable with stored arguments. In
langgraph-checkpoint 4.x the default is permissive (any name, with a
warning), so whoever can write the checkpoint topic or the Redis read model
could name ``os.system``. Even in LangGraph's strict mode a blocked name
decodes silently to its raw arguments, which hides tampering from the
application.

:class:`CheckpointSerializer` walks every stored value *before* decoding it
and refuses, with :class:`~chatlog.errors.UnsafeCheckpointValueError`, any
record whose type is not on the allowlist: LangGraph's own safe set (messages,
documents, ``Send``/``Command``/``Interrupt``, datetimes, UUIDs, ...) plus
what the caller or a compiled graph adds with ``with_allowlist``. Only then
does LangGraph's decoder run, with the same allowlist, so nothing outside it
is ever imported or called.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde import _msgpack as lg_msgpack
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import (
    EXT_CONSTRUCTOR_KW_ARGS,
    EXT_CONSTRUCTOR_POS_ARGS,
    EXT_CONSTRUCTOR_SINGLE_ARG,
    EXT_DELTA_SNAPSHOT,
    EXT_METHOD_SINGLE_ARG,
    EXT_NUMPY_ARRAY,
    EXT_PYDANTIC_V1,
    EXT_PYDANTIC_V2,
    JsonPlusSerializer,
)

from chatlog.errors import CheckpointDecodeError, UnsafeCheckpointValueError, UnsafeInputError

#: Extension codes whose record is ``(module, name, args, ...)``: a constructor call.
_CONSTRUCTORS = frozenset(
    {
        EXT_CONSTRUCTOR_SINGLE_ARG,
        EXT_CONSTRUCTOR_POS_ARGS,
        EXT_CONSTRUCTOR_KW_ARGS,
        EXT_PYDANTIC_V1,
        EXT_PYDANTIC_V2,
    }
)
_KNOWN_CODES = _CONSTRUCTORS | {EXT_METHOD_SINGLE_ARG, EXT_NUMPY_ARRAY, EXT_DELTA_SNAPSHOT}
#: Serializer type tags whose bytes are data, never code.
_PLAIN_TYPES = frozenset({"null", "bytes", "bytearray"})
_MSGPACK_OPTIONS = ormsgpack.OPT_NON_STR_KEYS


class CheckpointSerializer(JsonPlusSerializer):
    """LangGraph's ``JsonPlusSerializer`` with a strict allowlist enforced as a typed error.

    Writes are LangGraph's msgpack format unchanged, so checkpoints stay
    readable by LangGraph's own savers. Reads accept only the serializer
    type tags ``null``, ``bytes``, ``bytearray``, ``msgpack`` and ``json``
    (never ``pickle``) and only extension types on the allowlist; anything
    else raises :class:`~chatlog.errors.UnsafeCheckpointValueError` before
    any module is imported.

    Args:
        allowed_msgpack_modules: Extra ``(module, name)`` pairs (or classes)
            that may be rebuilt from msgpack, beside LangGraph's safe set.
        allowed_json_modules: Extra ``(*module, name)`` paths that may be
            rebuilt from LangGraph's legacy JSON format.
    """

    def __init__(
        self,
        *,
        allowed_msgpack_modules: Iterable[tuple[str, ...] | type] | None = None,
        allowed_json_modules: Iterable[tuple[str, ...]] | None = None,
    ) -> None:
        extra = tuple(allowed_msgpack_modules or ())
        super().__init__(
            pickle_fallback=False,
            allowed_json_modules=tuple(allowed_json_modules or ()) or None,
            # None is LangGraph's strict mode (its safe set only); a non-empty
            # tuple is that set plus the extras. Never True (permissive).
            allowed_msgpack_modules=extra or None,
        )

    def allows(self, module: str, name: str) -> bool:
        """Whether a msgpack record naming ``module.name`` may be rebuilt."""
        key = (module, name)
        if key in lg_msgpack.SAFE_MSGPACK_TYPES:
            return True
        allowed = self._allowed_msgpack_modules
        return isinstance(allowed, set) and key in allowed

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode a stored value after checking every type it names.

        Raises:
            UnsafeCheckpointValueError: the value names a type, method or
                serializer outside the allowlist (nothing was imported or run).
            CheckpointDecodeError: the bytes are not a well-formed value.
        """
        kind, payload = data
        if kind == "msgpack":
            self._check_msgpack(payload)
        elif kind == "json":
            self._check_json(payload)
        elif kind not in _PLAIN_TYPES:
            raise UnsafeCheckpointValueError(
                f"a stored checkpoint value has serializer type {kind[:40]!r}; chatlog decodes "
                "only null, bytes, bytearray, msgpack and json (never pickle)"
            )
        try:
            return super().loads_typed(data)
        except (ValueError, TypeError, ormsgpack.MsgpackDecodeError) as exc:
            raise CheckpointDecodeError(
                f"a stored checkpoint value ({kind}) could not be decoded: {exc}"
            ) from exc

    def _check_msgpack(self, payload: bytes) -> None:
        check = _ExtensionCheck(self)
        try:
            ormsgpack.unpackb(payload, ext_hook=check, option=_MSGPACK_OPTIONS)
        except (ValueError, TypeError, ormsgpack.MsgpackDecodeError) as exc:
            # ormsgpack replaces an ext_hook's exception with a bare
            # "ext_hook failed", so the refusal travels beside it.
            if check.refusal is not None:
                raise check.refusal from None
            raise CheckpointDecodeError(
                f"a stored checkpoint value is not well-formed msgpack: {exc}"
            ) from exc
        if check.refusal is not None:
            raise check.refusal

    def _check_json(self, payload: bytes) -> None:
        try:
            json.loads(payload, object_hook=self._check_json_object)
        except UnsafeCheckpointValueError:
            raise
        except ValueError as exc:
            raise CheckpointDecodeError(
                f"a stored checkpoint value is not well-formed JSON: {exc}"
            ) from exc

    def _check_json_object(self, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("lc") == 2 and value.get("type") == "constructor":
            path = value.get("id")
            if not isinstance(path, list) or len(path) < 2 or not all(
                isinstance(part, str) for part in path
            ):
                raise UnsafeCheckpointValueError("a stored JSON constructor has a malformed id")
            module, name = ".".join(path[:-1]), path[-1]
            allowed_json = self._allowed_json_modules
            if not self.allows(module, name) and not (
                isinstance(allowed_json, set) and tuple(path) in allowed_json
            ):
                raise UnsafeCheckpointValueError(
                    f"a stored checkpoint value names {module}.{name}, which is not on the "
                    "allowlist; nothing was imported"
                )
        # lc:1 records go to langchain-core's Reviver, which only revives
        # langchain_core's own serializable classes (allowed_objects="core").
        return value


class _ExtensionCheck:
    """An ormsgpack ``ext_hook`` that checks every extension record and builds nothing."""

    def __init__(self, serde: CheckpointSerializer) -> None:
        self.serde = serde
        self.refusal: UnsafeCheckpointValueError | None = None

    def __call__(self, code: int, data: bytes) -> None:
        try:
            self._check(code, data)
        except UnsafeCheckpointValueError as exc:
            self.refusal = self.refusal or exc
            raise

    def _check(self, code: int, data: bytes) -> None:
        if code not in _KNOWN_CODES:
            raise UnsafeCheckpointValueError(
                f"a stored checkpoint value holds unknown msgpack extension code {code}"
            )
        # Unpacking the record with this same hook checks nested records
        # (a message inside a Send inside a list) before anything is built.
        record = ormsgpack.unpackb(data, ext_hook=self, option=_MSGPACK_OPTIONS)
        if code in _CONSTRUCTORS:
            module, name = _names(record, 2)
            if not self.serde.allows(module, name):
                raise UnsafeCheckpointValueError(
                    f"a stored checkpoint value names {module}.{name}, which is not on the "
                    "allowlist; nothing was imported. If the type is yours, allow it with "
                    f"saver.with_allowlist([({module!r}, {name!r})])"
                )
        elif code == EXT_METHOD_SINGLE_ARG:
            module, name = _names(record, 4)
            method = record[3]
            if (module, name, method) not in lg_msgpack.SAFE_MSGPACK_METHODS:
                raise UnsafeCheckpointValueError(
                    f"a stored checkpoint value calls {module}.{name}.{method!s:.40}, which is "
                    "not an allowed method; nothing was imported"
                )
        # EXT_NUMPY_ARRAY is (dtype, shape, order, buffer): numpy builds it
        # from the buffer without importing anything the record names, and
        # refuses object dtypes itself. EXT_DELTA_SNAPSHOT wraps a value whose
        # own records were checked by the unpack above.


def _names(record: Any, size: int) -> tuple[str, str]:
    if not isinstance(record, list | tuple) or len(record) < size:
        raise UnsafeCheckpointValueError("a stored checkpoint value has a malformed type record")
    module, name = record[0], record[1]
    if not isinstance(module, str) or not isinstance(name, str):
        raise UnsafeCheckpointValueError("a stored checkpoint value has a malformed type record")
    return module, name


def _inner(serde: SerializerProtocol) -> SerializerProtocol:
    return _inner(serde.serde) if isinstance(serde, EncryptedSerializer) else serde


def loads_pickle(serde: SerializerProtocol) -> bool:
    """Whether ``serde`` writes and loads pickle."""
    inner = _inner(serde)
    return isinstance(inner, JsonPlusSerializer) and inner.pickle_fallback


def is_permissive(serde: SerializerProtocol) -> bool:
    """Whether ``serde`` imports and calls any type a stored value names."""
    inner = _inner(serde)
    return isinstance(inner, JsonPlusSerializer) and (
        # langgraph-checkpoint 4.3 keeps the allowlists in these attributes
        # (True = any type); there is no public accessor.
        inner._allowed_msgpack_modules is True or inner._allowed_json_modules is True
    )


def checked_serde(
    serde: SerializerProtocol | None, *, allow_unsafe_serde: bool
) -> SerializerProtocol:
    """The serializer a saver reads with: strict by default, permissive only by name.

    Raises:
        UnsafeInputError: ``serde`` loads pickle (always refused), or it
            rebuilds any type a stored value names and ``allow_unsafe_serde``
            is not set.
    """
    if serde is None:
        return CheckpointSerializer()
    if loads_pickle(serde):
        raise UnsafeInputError(
            "JsonPlusSerializer(pickle_fallback=True) would write and load pickle; chatlog never "
            "does: use the default serializer (chatlog's CheckpointSerializer)"
        )
    if is_permissive(serde) and not allow_unsafe_serde:
        raise UnsafeInputError(
            f"{type(serde).__name__} imports and calls any type named in stored data, so anyone "
            "who can write the checkpoint topic or Redis could run code in this process. Use "
            "the default serializer (chatlog's CheckpointSerializer, optionally with "
            "allowed_msgpack_modules=[...]), or pass allow_unsafe_serde=True if every writer "
            "of Kafka and Redis is trusted"
        )
    return serde
