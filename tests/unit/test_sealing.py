"""The encryption envelope: sealed messages round-trip, and refuse every splice."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.errors import ConfigurationError, DecryptionError, EventDecodeError
from chatlog.schemas.codec import HEADER_SIZE, MAGIC, EventCodec, SchemaRegistry
from chatlog.schemas.event_reader import read_event
from chatlog.schemas.events import (
    ChatEvent,
    MessageAppended,
    MessagesAppended,
    MessageSealed,
    MessagesSealed,
    SessionCleared,
)
from chatlog.schemas.sealing import (
    DataKey,
    KeyEncryptionKey,
    key_encryption_keys,
    open_message,
    seal_message,
    subject_of,
)
from tests.helpers import messages


# No deadline: the first example loads and initializes the cipher library.
@settings(deadline=None)
@given(messages)
def test_every_message_round_trips_sealed_and_keeps_nothing_in_clear(
    message: MessageAppended,
) -> None:
    """Every field but type and id is in the ciphertext; opening gives the message back."""
    event = ChatEvent("s1", message, user_id="u1")
    key = DataKey.generate(subject_of(event))
    sealed = seal_message(event, key)
    assert isinstance(sealed.payload, MessageSealed)
    assert (sealed.payload.type, sealed.payload.id) == (message.type, message.id)
    codec = EventCodec()
    assert open_message(codec.decode(codec.encode(sealed)), key) == event


def test_a_spliced_ciphertext_does_not_open() -> None:
    """A ciphertext moved to another session, event or key is refused."""
    key = DataKey.generate("u1")
    event = ChatEvent("s1", MessageAppended("human", "secret"), user_id="u1")
    sealed = seal_message(event, key)
    other = seal_message(ChatEvent("s2", MessageAppended("human", "x"), user_id="u1"), key)
    assert isinstance(sealed.payload, MessageSealed) and isinstance(other.payload, MessageSealed)
    moved = replace(
        other,
        payload=replace(
            other.payload, nonce=sealed.payload.nonce, ciphertext=sealed.payload.ciphertext
        ),
    )
    for forged in (
        moved,
        replace(sealed, session_id="s2"),
        replace(sealed, event_id="00000000-0000-0000-0000-000000000000"),
        replace(sealed, payload=replace(sealed.payload, type="ai")),
    ):
        with pytest.raises(DecryptionError):
            open_message(forged, key)
    with pytest.raises(DecryptionError):
        open_message(sealed, DataKey.generate("u1"))


def test_other_events_are_not_sealed() -> None:
    """Lifecycle events carry nothing personal: they stay as they are."""
    event = ChatEvent("s1", SessionCleared(), user_id="u1")
    assert seal_message(event, DataKey.generate("u1")) is event


def test_wrapped_data_keys_open_only_under_their_kek_subject_and_id() -> None:
    """A wrapped data key is bound to its KEK, subject and key id."""
    kek = KeyEncryptionKey.generate()
    key = DataKey.generate("u1")
    wrapped = kek.wrap(key)
    assert kek.unwrap("u1", key.key_id, wrapped) == key
    with pytest.raises(DecryptionError):
        kek.unwrap("u2", key.key_id, wrapped)
    with pytest.raises(DecryptionError):
        KeyEncryptionKey.generate().unwrap("u1", key.key_id, wrapped)


def test_key_encryption_keys_parse_base64_and_files(tmp_path: Path) -> None:
    """CHATLOG_ENCRYPTION_KEY is base64 of 32 bytes or file:PATH; anything else is refused."""
    kek = KeyEncryptionKey.generate()
    path = tmp_path / "kek"
    path.write_text(kek.encoded() + "\n")
    old = KeyEncryptionKey.generate()
    keys = key_encryption_keys(f"file:{path}", f" {old.encoded()} ,")
    assert [k.key_id for k in keys] == [kek.key_id, old.key_id]
    assert kek.key_id != old.key_id and kek.encoded() not in repr(kek)
    assert key_encryption_keys(None, None) == []
    for bad in ("not base64!", "c2hvcnQ=", f"file:{tmp_path / 'missing'}"):
        with pytest.raises(ConfigurationError):
            KeyEncryptionKey.parse(bad)
    with pytest.raises(ConfigurationError):
        key_encryption_keys(None, old.encoded())


def test_a_v2_event_with_the_sealed_branch_is_refused_like_fastavro() -> None:
    """v2 has no MessageSealed: the hand-written reader refuses its branch in a v2 body."""
    registry = SchemaRegistry()
    v2 = next(v for v in registry.versions if (v.name, v.version) == ("chatlog.ChatEvent", 2))
    sealed = seal_message(
        ChatEvent("s1", MessageAppended("human", "x")), DataKey.generate("s1")
    )
    body = EventCodec(registry).encode(sealed)[HEADER_SIZE:]
    assert read_event(MAGIC + v2.fingerprint + body, HEADER_SIZE) == sealed
    with pytest.raises(EventDecodeError):
        EventCodec(registry).decode(MAGIC + v2.fingerprint + body)


def test_a_sealed_event_without_the_key_encryption_key_stops_with_what_to_set() -> None:
    """A projector without CHATLOG_ENCRYPTION_KEY refuses to guess: a typed error names it."""
    from types import SimpleNamespace

    from chatlog.errors import EncryptionKeyRequiredError
    from chatlog.projector.change_reader import ChangeReader

    sealed = seal_message(ChatEvent("s1", MessageAppended("human", "x")), DataKey.generate("s1"))
    raw = SimpleNamespace(key=b"s1", value=EventCodec().encode(sealed), partition=0, offset=0)
    with pytest.raises(EncryptionKeyRequiredError, match="CHATLOG_ENCRYPTION_KEY"):
        ChangeReader(EventCodec(), 1 << 20).read(raw)


@settings(deadline=None)
@given(st.lists(messages, max_size=4), st.integers(0, 2**63 - 1))
def test_a_conditional_append_round_trips_sealed(
    payloads: list[MessageAppended], version: int
) -> None:
    """A MessagesAppended is sealed as a MessagesSealed: version, types and ids in clear."""
    event = ChatEvent("s1", MessagesAppended(version, tuple(payloads)), user_id="u1")
    key = DataKey.generate(subject_of(event))
    sealed = seal_message(event, key)
    assert isinstance(sealed.payload, MessagesSealed)
    assert sealed.payload.expected_version == version
    assert [(m.type, m.id, m.subject) for m in sealed.payload.messages] == [
        (p.type, p.id, "u1") for p in payloads
    ]
    codec = EventCodec()
    decoded = codec.decode(codec.encode(sealed))
    assert decoded == sealed
    assert open_message(decoded, key) == event


def test_a_conditional_appends_messages_cannot_be_moved_reordered_or_reversioned() -> None:
    """Each sealed message is bound to its event, place and expected version."""
    key = DataKey.generate("u1")
    two = (MessageAppended("human", "first", id="a"), MessageAppended("human", "second", id="b"))
    sealed = seal_message(ChatEvent("s1", MessagesAppended(3, two), user_id="u1"), key)
    single = seal_message(ChatEvent("s1", MessageAppended("human", "x", id="a"), user_id="u1"), key)
    assert isinstance(sealed.payload, MessagesSealed)
    assert isinstance(single.payload, MessageSealed)
    first, second = sealed.payload.messages
    swapped = (
        replace(first, nonce=second.nonce, ciphertext=second.ciphertext),
        replace(second, nonce=first.nonce, ciphertext=first.ciphertext),
    )
    for forged in (
        replace(sealed, payload=MessagesSealed(3, swapped)),
        replace(sealed, payload=MessagesSealed(4, sealed.payload.messages)),
        replace(sealed, payload=MessagesSealed(3, (second,))),
        replace(sealed, session_id="s2"),
        # A single message's ciphertext does not open inside a group, nor the reverse.
        replace(sealed, payload=MessagesSealed(3, (replace(
            first, nonce=single.payload.nonce, ciphertext=single.payload.ciphertext
        ), second))),
        replace(single, payload=replace(
            single.payload, nonce=first.nonce, ciphertext=first.ciphertext
        )),
    ):
        with pytest.raises(DecryptionError):
            open_message(forged, key)


def test_a_v3_event_with_the_sealed_conditional_branch_is_refused_like_fastavro() -> None:
    """v3 has no MessagesSealed: the hand-written reader refuses its branch in a v3 body."""
    registry = SchemaRegistry()
    v3 = next(v for v in registry.versions if (v.name, v.version) == ("chatlog.ChatEvent", 3))
    event = ChatEvent("s1", MessagesAppended(0, (MessageAppended("human", "x"),)))
    sealed = seal_message(event, DataKey.generate("s1"))
    body = EventCodec(registry).encode(sealed)[HEADER_SIZE:]
    assert read_event(MAGIC + v3.fingerprint + body, HEADER_SIZE) == sealed
    with pytest.raises(EventDecodeError):
        EventCodec(registry).decode(MAGIC + v3.fingerprint + body)
    # A v3 conditional append (written before v4) reads with today's codec unchanged.
    plain = EventCodec(SchemaRegistry([v3])).encode(event)
    assert plain[2:HEADER_SIZE] == v3.fingerprint
    assert EventCodec(registry).decode(plain) == event
