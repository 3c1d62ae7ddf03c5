"""Operating the projector on real services: metrics, lag, status, health, logs, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import redis
from click.testing import CliRunner
from kafka import KafkaProducer
from langchain_core.messages import AIMessage, HumanMessage
from prometheus_client.parser import text_string_to_metric_families

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.cli.devstack import free_port
from chatlog.projector import LogRecord, Projector, RedisProjection
from chatlog.projector.lag import consumer_lag, group_status
from chatlog.projector.metrics import MetricsServer, ProjectorMetrics
from chatlog.schemas import EventCodec
from tests.helpers import cli_args, read_topic

#: Upper bound on waiting for a condition on real services (not a performance threshold).
WAIT_S = 60.0
SECRET_CONTENT = "the-secret-content-of-a-chat-message"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"{base_url}/metrics")
    assert status == 200
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def read_log(settings: Settings) -> list[LogRecord]:
    """Every event of the topic (the test's "not an event" poison left out), decoded."""
    codec = EventCodec()
    return [
        LogRecord(raw.partition, raw.offset, codec.decode(raw.value))
        for raw in read_topic(settings, settings.topic, timeout_s=WAIT_S)
        if not raw.value.startswith(b"not an event")
    ]


def test_metrics_lag_status_and_readiness_follow_the_projector(
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
    redis_client: redis.Redis,
) -> None:
    """Counters match applied, skipped and dead-lettered events; lag N then 0; /readyz 503, 200."""
    settings = settings_factory(partitions=3)
    chatlog = chatlog_factory(settings)
    for i in range(3):
        chatlog.history(f"ops-{i}", user_id="u").add_messages(
            [HumanMessage(SECRET_CONTENT), AIMessage("hi")]
        )
    producer = KafkaProducer(**settings.kafka_client_options())
    producer.send(
        settings.topic,
        key=b"ops-0",
        value=b"not an event",
        headers=[("event-type", b"MessageAppended")],
    ).get(timeout=WAIT_S)
    producer.close()
    # Session ops-1 is already in Redis, as after a crash between apply and commit.
    replayed = [r for r in read_log(settings) if r.event.session_id == "ops-1"]
    assert RedisProjection(redis_client, settings.namespace).apply(replayed).applied == 2

    stopped_lag = consumer_lag(settings)
    assert stopped_lag.total == 7
    assert all(p.committed is None for p in stopped_lag.partitions)

    metrics = ProjectorMetrics(ready_max_lag=0)
    with MetricsServer(metrics, port=0, host="127.0.0.1") as server:
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/readyz")[0] == 503
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/nothing")[0] == 404
        with Projector(settings, metrics=metrics).running():
            wait_until(lambda: get(f"{base}/readyz")[0] == 200, "/readyz to turn 200")
            found = samples(base)
            caught_up = consumer_lag(settings)
            status = group_status(settings)
        assert get(f"{base}/readyz")[0] == 503
        assert get(f"{base}/healthz")[0] == 200

    appended = (("event_type", "MessageAppended"),)
    assert found[("chatlog_events_applied_total", appended)] == 4
    assert found[("chatlog_events_skipped_total", appended)] == 2
    assert found[("chatlog_events_dead_lettered_total", appended)] == 1
    assert found[("chatlog_end_to_end_latency_seconds_count", ())] == 4
    assert found[("chatlog_batch_apply_seconds_count", ())] == found[("chatlog_batches_total", ())]
    assert found[("chatlog_batches_total", ())] >= 1
    assert found[("chatlog_rebalances_total", (("kind", "assigned"),))] >= 1
    assert found[("chatlog_ready", ())] == 1
    for partition in range(3):
        key = ("chatlog_consumer_lag", (("partition", str(partition)), ("topic", settings.topic)))
        assert found[key] == 0
    assert found[("chatlog_assigned_partitions", ())] >= 3

    assert caught_up.total == 0
    assert sum(p.committed or 0 for p in caught_up.partitions) == 7
    assert status.state == "Stable"
    assert len(status.members) == 1
    assert status.lag.total == 0


def test_worker_process_serves_health_logs_json_and_drains_on_sigterm(
    settings_factory: Callable[..., Settings],
    chatlog_factory: Callable[[Settings], ChatLog],
) -> None:
    """`chatlog projector run` becomes ready, logs JSON without content, exits 0 on SIGTERM."""
    settings = settings_factory(partitions=2)
    chatlog = chatlog_factory(settings)
    chatlog.history("proc-1", user_id="u").add_messages(
        [HumanMessage(SECRET_CONTENT), AIMessage("ok")]
    )
    flags = cli_args(
        settings,
        "--consumer-group",
        settings.consumer_group,
        "--consumer-session-timeout-ms",
        "6000",
    )
    lag = CliRunner().invoke(cli, [*flags, "projector", "lag", "--json"])
    assert lag.exit_code == 0, lag.output
    assert json.loads(lag.output)["total"] == 2

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatlog.cli",
            *flags,
            "projector",
            "run",
            "--metrics-port",
            str(port),  # no --metrics-host: the default binds loopback, reached below
            "--log-format",
            "json",
            "--ready-max-lag",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                return get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            except OSError:
                return False  # not listening yet

        wait_until(ready, "the worker process to become ready")
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status = CliRunner().invoke(cli, [*flags, "projector", "status", "--json"])
        assert status.exit_code == 0, status.output
        assert json.loads(status.output)["lag"]["total"] == 0
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    text = stderr.decode()
    entries: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines() if line]
    assert any(entry.get("rebalance") == "assigned" for entry in entries)
    assert any("signal" in entry["message"] for entry in entries)
    assert any(entry["message"].startswith("connecting to Kafka at") for entry in entries)
    assert SECRET_CONTENT not in text
    assert CliRunner().invoke(cli, [*flags, "projector", "lag", "--json"]).exit_code == 0
