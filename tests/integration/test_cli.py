"""The command line on real services: history show, and the demo on the embedded stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner
from langchain_core.messages import AIMessage, HumanMessage

from chatlog import ChatLog, Settings
from chatlog.cli import cli
from chatlog.projector import Projector


def _env(settings: Settings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "CHATLOG_TOPIC": settings.topic,
        "CHATLOG_NAMESPACE": settings.namespace,
    }


def test_history_show_prints_the_session_as_json(
    settings: Settings, chatlog: ChatLog, projector: Projector
) -> None:
    """`chatlog history show --json` prints LangChain message dicts in log order."""
    history = chatlog.history("cli-session", user_id="dora")
    history.add_messages([HumanMessage("ping"), AIMessage("pong")])
    assert len(history.messages) == 2
    result = CliRunner().invoke(
        cli, ["history", "show", "cli-session", "--user", "dora", "--json"], env=_env(settings)
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [(m["type"], m["data"]["content"]) for m in shown] == [("human", "ping"), ("ai", "pong")]


def test_history_show_refuses_a_bad_session_id(settings: Settings) -> None:
    """A bad session id is a clear error with exit status 1, not a traceback."""
    env = {**os.environ, **_env(settings)}
    done = subprocess.run(
        [sys.executable, "-c", "from chatlog.cli import main; main()", "history", "show", "a\tb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "control character" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def _demo(prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`chatlog demo --embedded` in a child process (``prelude`` runs first in it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-c", prelude + "from chatlog.cli import main; main()",
         "demo", "--embedded"],
        env={**env, "COLUMNS": "200"},  # headings on one line
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout
    assert "(turn 2) you said: And why replay it?" in done.stdout
    return done


def test_demo_runs_on_the_embedded_stack_and_rebuilds_identically() -> None:
    """`chatlog demo --embedded` converses, wipes the read model, rebuilds it and says identical.

    Beside the classic history it runs a LangGraph graph on ChatLogCheckpointSaver,
    restarts it and resumes the thread, and prints no deprecation warning.
    """
    done = _demo()
    assert "LangGraph: a StateGraph compiled with ChatLogCheckpointSaver, thread ada-thread" in (
        done.stdout
    )
    assert "resumed after the restart" in done.stdout
    assert "(turn 2) you said: Who am I?" in done.stdout  # the resumed thread remembers turn 1
    assert "Deprecat" not in done.stdout + done.stderr


def test_demo_without_langgraph_runs_the_classic_path_and_says_what_to_install() -> None:
    """Without the langgraph extra the demo still converses and rebuilds, and names the extra."""
    done = _demo("import sys; sys.modules['langgraph'] = None; ")
    assert "LangGraph path skipped" in done.stdout
    assert "pip install 'chatlog[langgraph]'" in done.stdout
    assert "ChatLogCheckpointSaver, thread" not in done.stdout


def test_projector_run_drains_and_exits_zero_on_sigterm(
    settings: Settings, chatlog: ChatLog
) -> None:
    """`chatlog projector run` applies the log, and on SIGTERM commits and exits 0."""
    import signal
    import time

    from kafka import KafkaAdminClient

    history = chatlog.history("worker-session")
    history.add_messages([HumanMessage(str(i)) for i in range(50)])
    env = {
        **os.environ,
        **_env(settings),
        "CHATLOG_CONSUMER_GROUP": settings.consumer_group,
        "CHATLOG_SESSION_TIMEOUT_MS": "6000",
        "CHATLOG_HEARTBEAT_INTERVAL_MS": "1000",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", "from chatlog.cli import main; main()", "projector", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert len(history.messages) == 50  # waits until the worker applied them
    finally:
        time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    admin = KafkaAdminClient(**settings.kafka_client_options())
    committed = admin.list_group_offsets(settings.consumer_group)[settings.consumer_group]
    admin.close()
    topic_offsets = {
        tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == settings.topic
    }
    position = chatlog.written.get("worker-session")
    assert position is not None
    assert topic_offsets[position.partition] == position.offset + 1


def test_dev_prints_exports_for_a_running_stack_and_stops_on_sigterm() -> None:
    """`chatlog dev` prints working export lines and shuts its servers down on SIGTERM."""
    import signal

    import redis

    dev = subprocess.Popen(
        [sys.executable, "-c", "from chatlog.cli import main; main()", "dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (dev.stdout.readline().strip() for _ in range(2))  # type: ignore[union-attr]
        )
        client = redis.Redis.from_url(exports["REDIS_URL"])
        assert client.ping()
        client.close()
        assert exports["KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.communicate(timeout=60)
    assert dev.returncode == 0
