"""The Redis Cluster loss markers' keys: each in the slot it names, parsed back to its namespace."""

from __future__ import annotations

from redis.crc import key_slot as redis_key_slot

from chatlog.keys import CLUSTER_SLOTS, ReadModelKeys, key_slot, namespace_of, slot_tag
from chatlog.projector.cluster_projection import slots_of


def test_every_slot_has_a_short_tag_that_lands_in_it() -> None:
    keys = ReadModelKeys("chatlog:v1")
    for slot in range(CLUSTER_SLOTS):
        assert len(slot_tag(slot)) <= 3
        assert redis_key_slot(keys.slot_marker(slot).encode()) == slot


def test_key_slot_is_redis_cluster_hashing() -> None:
    for key in ("plain", "a{tag}b", "a{}b", "{}x", "x{y", "ns:s:{session-1}:meta", "é{ü}"):
        assert key_slot(key) == redis_key_slot(key.encode()), key


def test_the_known_slots_bitmap_shares_the_generation_slot_and_both_kinds_are_registered() -> None:
    keys = ReadModelKeys("chatlog:v2")
    assert key_slot(keys.known_slots()) == key_slot(keys.generation())
    for key in (keys.known_slots(), keys.slot_marker(0), keys.slot_marker(CLUSTER_SLOTS - 1)):
        assert namespace_of(key) == "chatlog:v2"
        assert not ReadModelKeys("chatlog").owns(key)


def test_bitmap_bits_read_back_as_setbit_wrote_them() -> None:
    bitmap = bytearray(CLUSTER_SLOTS // 8)
    for slot in (0, 7, 8, 1234, CLUSTER_SLOTS - 1):
        bitmap[slot // 8] |= 0x80 >> (slot % 8)  # SETBIT's bit order: the high bit first
    assert slots_of(bytes(bitmap)) == {0, 7, 8, 1234, CLUSTER_SLOTS - 1}
    assert slots_of(b"") == set()
