"""Encrypted checkpoints: a serializer wrapper that seals every value under its thread's data key.

With ``CHATLOG_ENCRYPTION_KEY`` set, :class:`~chatlog.histories.checkpointer.ChatLogCheckpointSaver`
wraps its serializer in :class:`SealingSerializer`: every checkpoint,
metadata, channel value and pending write it serializes becomes
``("chatlog-sealed", frame)``, AES-256-GCM under the data key of the thread
(the thread id is the subject), bound to the thread id and the inner type.
The projector never deserializes checkpoint values, so the read model holds
them sealed too and the saver opens them on read.

A serializer sees values, not threads: the saver names the thread of each
write and read with :func:`for_thread` (a decorator of its methods), which
sets a context variable the wrapper reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

from langgraph.checkpoint.serde.base import SerializerProtocol

from chatlog.errors import EncryptionError
from chatlog.producers.key_store import DataKeyStore
from chatlog.schemas.checkpoint_stored import pack, unpack

#: The type of a sealed value; its bytes frame the inner type, key id, nonce, ciphertext.
SEALED_TYPE = "chatlog-sealed"
#: Bound into every ciphertext, with the thread id and the inner type.
CHECKPOINT_FORMAT = "chatlog.CheckpointValueSealed.v1"

_thread: ContextVar[str | None] = ContextVar("chatlog_sealing_thread", default=None)

P = ParamSpec("P")
R = TypeVar("R")


class CheckpointShreddedError(EncryptionError):
    """Raised when a checkpoint value is read whose thread's data key was destroyed.

    The thread was deleted (``delete_thread``) and its key destroyed; a read
    model rebuilt as of a time before the deletion still lists it, but its
    values can never be read again.
    """


@contextmanager
def sealing_thread(thread_id: str) -> Iterator[None]:
    """Seal and open values for ``thread_id`` within the block."""
    token = _thread.set(thread_id)
    try:
        yield
    finally:
        _thread.reset(token)


def for_thread(
    thread_of: Callable[[Any], str],
) -> Callable[[Callable[Concatenate[Any, Any, P], R]], Callable[Concatenate[Any, Any, P], R]]:
    """Decorate a saver method whose first argument names the thread (``thread_of`` reads it)."""

    def decorate(
        method: Callable[Concatenate[Any, Any, P], R],
    ) -> Callable[Concatenate[Any, Any, P], R]:
        @functools.wraps(method)
        def wrapper(self: Any, first: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with sealing_thread(thread_of(first)):
                return method(self, first, *args, **kwargs)

        return wrapper

    return decorate


def thread_of_config(config: Any) -> str:
    """The thread id of a LangGraph ``RunnableConfig``."""
    return str(config["configurable"]["thread_id"])


def _associated(thread_id: str, key_id: str, kind: str) -> bytes:
    return "\x00".join((CHECKPOINT_FORMAT, thread_id, key_id, kind)).encode("utf-8")


class SealingSerializer(SerializerProtocol):
    """A serializer that seals what ``inner`` serializes under the current thread's data key.

    Values written before encryption was turned on (any other type) are
    read through ``inner`` as they are.
    """

    def __init__(
        self, inner: SerializerProtocol, key_store: DataKeyStore | Callable[[], DataKeyStore]
    ) -> None:
        self.inner = inner
        # A store, or how to get one when first needed (the saver's lazy producer's).
        self._key_store = key_store

    @property
    def key_store(self) -> DataKeyStore:
        """The data keys values are sealed under."""
        store = self._key_store
        return store if isinstance(store, DataKeyStore) else store()

    @staticmethod
    def _current_thread() -> str:
        thread_id = _thread.get()
        if thread_id is None:
            raise EncryptionError(
                "a checkpoint value was serialized outside a saver write: the sealing "
                "serializer needs the thread (chatlog.histories.checkpoint_sealing.for_thread)"
            )
        return thread_id

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """``obj`` serialized by ``inner``, then sealed under the thread's data key."""
        kind, data = self.inner.dumps_typed(obj)
        thread_id = self._current_thread()
        key = self.key_store.key_for(thread_id)
        nonce, ciphertext = key.seal(bytes(data), _associated(thread_id, key.key_id, kind))
        return SEALED_TYPE, pack([kind.encode("utf-8"), key.key_id.encode(), nonce, ciphertext])

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """The value of a sealed pair (or a plaintext one, through ``inner``).

        Raises:
            CheckpointShreddedError: the thread's data key was destroyed.
            DecryptionError: the value was altered or moved from another thread.
        """
        kind, blob = data
        if kind != SEALED_TYPE:
            return self.inner.loads_typed(data)
        thread_id = self._current_thread()
        inner_kind, key_id, nonce, ciphertext = unpack(blob)
        key = self.key_store.find(thread_id, key_id.decode())
        if key is None:
            raise CheckpointShreddedError(
                f"thread {thread_id!r} was deleted and its data key destroyed: its "
                "checkpoints can never be read again"
            )
        plain = key.open(nonce, ciphertext, _associated(thread_id, key.key_id, inner_kind.decode()))
        return self.inner.loads_typed((inner_kind.decode(), plain))


def sealed_serde(
    serde: SerializerProtocol, key_store: DataKeyStore | None
) -> SerializerProtocol:
    """``serde`` wrapped in :class:`SealingSerializer` when encryption is on."""
    return serde if key_store is None else SealingSerializer(serde, key_store)
