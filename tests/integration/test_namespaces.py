"""Namespaces are exact: validated where they enter, dropped key by key, listed with counts."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner

from chatlog import Settings
from chatlog.cli import cli
from chatlog.errors import ConfigurationError, NamespaceInUseError
from chatlog.keys import MAX_NAMESPACE_LENGTH, ReadModelKeys, active_namespace_key
from chatlog.namespaces import ActiveNamespace
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector.namespace_admin import list_namespaces
from chatlog.projector.replay import Replayer
from chatlog.schemas.events import ChatEvent, MessageAppended
from tests.helpers import cli_args

BAD_NAMES = [
    "chatlog*",
    "chat?og",
    "chat[lo]g",
    "chat\\log",
    "chat{log}",
    "chat log",
    "chat\tlog",
    "chat\nlog",
    "chat\x00log",
    "",
    "n" * (MAX_NAMESPACE_LENGTH + 1),
    "chatlog:active-namespace",
    "chatlog:active-namespace:x",
]


def _publish(settings: Settings, sessions: int = 6) -> None:
    ensure_topic(settings.topic, 2, settings=settings)
    with EventProducer(settings) as producer:
        producer.publish(
            [
                ChatEvent(f"s-{n}", MessageAppended("human", f"hi {n}.{i}"), user_id=f"u-{n % 2}")
                for n in range(sessions)
                for i in range(3)
            ]
        )


def _keys(client: redis.Redis, prefix: str) -> set[bytes]:
    return set(client.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000))


def _present(client: redis.Redis, keys: set[bytes]) -> set[bytes]:
    return {k for k in keys if client.exists(k)}


def _owned(client: redis.Redis, namespace: str) -> set[bytes]:
    keys = ReadModelKeys(namespace)
    return {k for k in client.scan_iter(match=keys.all_pattern(), count=1000) if keys.owns(k)}


@pytest.fixture
def neighbours(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> tuple[Settings, str, str, set[bytes]]:
    """A namespace ``base``, the active ``base:v2`` and look-alike keys of other applications."""
    settings = settings_factory()
    base = settings.namespace
    active = f"{base}:v2"
    _publish(settings)
    replayer = Replayer(settings)
    replayer.rebuild(base)
    replayer.rebuild(active, switch=True, handoff_s=0)
    strangers = {
        f"{base}:v2x".encode(),
        f"{base}:cache:1".encode(),
        f"{base}:s".encode(),
        f"{base}:s:{{s-1}}:msgs:extra".encode(),
        f"{base}:x:{{s-1}}:msgs".encode(),
        f"{base}s:{{s-1}}:msgs".encode(),
        f"other-app:{base}:s:{{s-1}}:msgs".encode(),
        f"other-app:{base}:positions".encode(),
        b"other-app:s:{s-1}:msgs",
    }
    for key in strangers:
        redis_client.set(key, b"not chatlog's")
    yield settings, base, active, strangers
    redis_client.delete(*strangers)


def test_drop_of_a_prefix_of_the_active_namespace_deletes_only_its_own_keys(
    neighbours: tuple[Settings, str, str, set[bytes]], redis_client: redis.Redis
) -> None:
    """Dropping ``ns`` while ``ns:v2`` is active leaves ``ns:v2`` and other apps' keys alone."""
    settings, base, active, strangers = neighbours
    own = _owned(redis_client, base)
    assert own and ReadModelKeys(base).positions().encode() in own
    others_before = (_keys(redis_client, base) | _present(redis_client, strangers)) - own
    assert strangers <= others_before
    assert _owned(redis_client, active) <= others_before

    code, output = _cli(settings, "replay", "drop", "--namespace", base, "--json")

    assert code == 0, output
    assert json.loads(output) == {"namespace": base, "deleted_keys": len(own)}
    assert _keys(redis_client, base) | _present(redis_client, strangers) == others_before
    assert Replayer(settings).verify(active).ok


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_bad_namespace_is_refused_wherever_it_enters(
    name: str,
    neighbours: tuple[Settings, str, str, set[bytes]],
    redis_client: redis.Redis,
) -> None:
    """Glob characters, braces, whitespace, control characters, empty, too long: refused."""
    settings, base, _active, _strangers = neighbours
    before = _keys(redis_client, base)
    with pytest.raises(ConfigurationError, match="CHATLOG_NAMESPACE"):
        Settings(namespace=name)
    if name:  # an empty variable reads as unset (the default namespace), like every setting
        with pytest.raises(ConfigurationError, match="CHATLOG_NAMESPACE"):
            Settings.from_env({"CHATLOG_NAMESPACE": name})
    replayer = Replayer(settings)
    for call in (
        lambda: replayer.drop(name),
        lambda: replayer.rebuild(name),
        lambda: replayer.verify(name),
        lambda: replayer.rebuild_session("s-1", name),
        lambda: ActiveNamespace.of(settings).switch(redis_client, name),
    ):
        with pytest.raises(ConfigurationError):
            call()
        code, output = _cli(settings, "replay", "drop", "--namespace", name)
        assert code == 2 and "--namespace" in output, output
    assert _keys(redis_client, base) == before


def test_a_pointer_holding_no_namespace_is_a_configuration_error(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """A corrupted active-namespace pointer (``chatlog*``) is refused when read, never used."""
    settings = settings_factory()
    redis_client.set(active_namespace_key(settings.topic), "chatlog*")
    try:
        with pytest.raises(ConfigurationError, match="active-namespace pointer"):
            ActiveNamespace.of(settings).get(redis_client)
        with pytest.raises(ConfigurationError):
            Replayer(settings).drop("anything")
    finally:
        redis_client.delete(active_namespace_key(settings.topic))


def test_drop_refuses_a_namespace_another_topic_has_active(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """A namespace is in use while any topic's pointer in this Redis names it."""
    settings, other = settings_factory(), settings_factory()
    ActiveNamespace.of(other).switch(redis_client, settings.namespace + ":shared")
    try:
        with pytest.raises(NamespaceInUseError, match=other.topic):
            Replayer(settings).drop(settings.namespace + ":shared")
    finally:
        redis_client.delete(active_namespace_key(other.topic))


def test_replay_namespaces_lists_counts_the_active_one_and_rebuilds(
    neighbours: tuple[Settings, str, str, set[bytes]], redis_client: redis.Redis
) -> None:
    """``replay namespaces`` shows each namespace's exact key count, the active one, rebuilds."""
    settings, base, active, _strangers = neighbours
    building, foreign = f"{base}:v3", f"{base}:elsewhere"
    redis_client.hset(ReadModelKeys(building).rebuild(), mapping={"state": "building",
                                                                  "topic": settings.topic})
    redis_client.hset(ReadModelKeys(foreign).rebuild(), mapping={"state": "complete",
                                                                 "topic": "another-topic"})

    listing = list_namespaces(settings)
    code, output = _cli(settings, "replay", "namespaces", "--json")

    assert code == 0, output
    assert json.loads(output) == listing.as_dict()
    assert listing.active == active
    mine = {info.namespace: info for info in listing.namespaces if info.namespace.startswith(base)}
    assert set(mine) == {base, active, building}
    for name in (base, active):
        assert mine[name].keys == len(_owned(redis_client, name))
        assert mine[name].sessions == 6
        assert mine[name].rebuild["state"] == "complete"
        assert not mine[name].rebuilding
    assert [n for n, info in mine.items() if info.active] == [active]
    assert mine[building].rebuilding and mine[building].keys == 1
    code, text = _cli(settings, "replay", "namespaces")
    assert code == 0 and f"{active}: {mine[active].keys} keys, 6 sessions - active" in text, text


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, cli_args(settings, *args))
    if isinstance(result.exception, (ConfigurationError, NamespaceInUseError)):
        return 1, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
