"""The rules of loss detection that need no server: holes, evicting policies, readiness."""

from __future__ import annotations

import pytest

from chatlog.errors import ChatLogError, ReadModelRepairingError
from chatlog.eviction_guard import evicting_policy
from chatlog.projector.metrics import ProjectorMetrics
from chatlog.session_integrity import has_hole
from chatlog.settings import Settings


@pytest.mark.parametrize(
    ("fields", "has_meta", "length", "hole"),
    [
        ([b"3", None, None], True, 3, False),  # meta and list agree
        ([b"3", None, None], True, 0, True),  # the list was lost
        ([b"3", None, None], True, 2, True),  # the list was shortened
        ([None, None, None], False, 0, False),  # never written (or both keys gone)
        ([None, None, None], False, 4, True),  # the meta was lost
        ([None, b"1700000000000", None], True, 0, False),  # a tombstone has no list
        ([b"3", None, b"1700000000000"], True, 0, False),  # an expired one's list goes
    ],
)
def test_a_hole_is_a_meta_count_that_differs_from_the_list(
    fields: list[bytes | None], has_meta: bool, length: int, hole: bool
) -> None:
    """A meta count other than LLEN, or a list without meta, is a hole; a tombstone is not."""
    assert has_hole(fields, has_meta, length) is hole


@pytest.mark.parametrize(
    ("policy", "sessions_expire", "evicts"),
    [
        ("noeviction", True, False),
        ("allkeys-lru", False, True),
        ("allkeys-lfu", False, True),
        ("allkeys-random", False, True),
        ("volatile-lru", False, False),
        ("volatile-ttl", True, True),
        ("volatile-random", True, True),
    ],
)
def test_policies_that_can_evict_chatlog_keys(
    policy: str, sessions_expire: bool, evicts: bool
) -> None:
    """allkeys-* always; volatile-* only when sessions carry a TTL."""
    assert evicting_policy(policy, sessions_expire=sessions_expire) is evicts


def test_allow_eviction_is_read_from_the_environment() -> None:
    """CHATLOG_ALLOW_EVICTION=true sets allow_eviction."""
    assert Settings.from_env({"CHATLOG_ALLOW_EVICTION": "true"}).allow_eviction is True
    assert Settings.from_env({}).allow_eviction is False


def test_a_namespace_repair_makes_the_worker_unready_and_is_counted() -> None:
    """/readyz is 503 while a namespace repair runs; repairs count per scope."""
    metrics = ProjectorMetrics()
    metrics.repair_started("namespace", "chatlog:v1")
    probe = metrics.readiness()
    assert not probe.ok and "repairing" in probe.reason
    metrics.repaired("namespace")
    metrics.repaired("session")
    metrics.repaired("session")
    value = metrics.registry.get_sample_value
    assert value("chatlog_read_model_repairs_total", {"scope": "namespace"}) == 1
    assert value("chatlog_read_model_repairs_total", {"scope": "session"}) == 2


def test_the_repairing_error_is_a_chatlog_timeout() -> None:
    """Readers can catch it as ChatLogError or TimeoutError."""
    assert issubclass(ReadModelRepairingError, ChatLogError)
    assert issubclass(ReadModelRepairingError, TimeoutError)
