"""``replay verify --repair`` rebuilds exactly the sessions that differ and says so."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis
from click.testing import CliRunner

from chatlog import Settings
from chatlog.cli import cli
from chatlog.keys import ReadModelKeys
from chatlog.producers.admin import ensure_topic
from chatlog.producers.producer import EventProducer
from chatlog.projector.replay import Replayer
from chatlog.schemas.events import ChatEvent, MessageAppended
from tests.helpers import cli_args

SESSIONS = [f"repair-{n:02d}" for n in range(20)]
DAMAGED = {"repair-03", "repair-07", "repair-11", "ghost"}


def _state(client: redis.Redis, keys: ReadModelKeys, session_id: str) -> tuple[object, ...]:
    return (
        client.lrange(keys.messages(session_id), 0, -1),
        client.hgetall(keys.meta(session_id)),
        client.pttl(keys.messages(session_id)),
    )


def _verify(settings: Settings, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli, cli_args(settings, "replay", "verify", "--json", *args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def test_verify_repair_rebuilds_exactly_the_damaged_sessions(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Lost, shortened, padded and stray sessions are rebuilt; every other key stays as it was."""
    settings = settings_factory()
    ensure_topic(settings.topic, 3, settings=settings)
    with EventProducer(settings) as producer:
        producer.publish(
            [
                ChatEvent(s, MessageAppended("human", f"{s} says {i}"), user_id="u")
                for i in range(4)
                for s in SESSIONS
            ]
        )
    replayer = Replayer(settings)
    replayer.rebuild()
    keys = ReadModelKeys(settings.namespace)
    assert replayer.verify(settle_s=0).ok
    redis_client.delete(keys.messages("repair-03"))  # a stray DEL
    redis_client.lpop(keys.messages("repair-07"))  # the head lost
    redis_client.rpush(keys.messages("repair-11"), b'{"type": "human", "data": {}}')  # padded
    redis_client.rpush(keys.messages("ghost"), b'{"type": "human", "data": {}}')  # no events
    intact = {s: _state(redis_client, keys, s) for s in SESSIONS if s not in DAMAGED}

    code, found = _verify(settings)
    assert code == 1
    assert {d["session_id"] for d in found["differences"]} == DAMAGED  # type: ignore[union-attr]
    assert found["repaired"] == [] and found["healthy"] is False

    code, report = _verify(settings, "--repair")

    assert code == 0, report
    assert {d["session_id"] for d in report["differences"]} == DAMAGED  # type: ignore[union-attr]
    repaired = {r["session_id"]: r for r in report["repaired"]}  # type: ignore[union-attr]
    assert set(repaired) == DAMAGED
    assert {s: repaired[s]["messages"] for s in DAMAGED} == {
        "repair-03": 4, "repair-07": 4, "repair-11": 4, "ghost": 0
    }
    assert report["remaining"] == [] and report["healthy"] is True
    assert {s: _state(redis_client, keys, s) for s in intact} == intact
    assert replayer.verify(settle_s=0).ok
